// Hostile mail in the web view (node:test + playwright-core + Debian chromium). Every attack message
// of tests/e2e/mail_browser_corpus.py points its remote URLs at a counting HTTP server on 127.0.0.5
// (read through the pytest oracle); scripts would set window.__pwned or open a dialog.
// Run by tests/e2e/test_mail_browser.py, one test per pytest test (--test-name-pattern).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  API, FX, api, appPage, check, close, conversation, key, launch, msg, openByHash, oracle, shot, threadOf, until, waitRows,
} from './mail_lib.mjs';

before(launch);
after(close);

const beacon = () => oracle('beacon');
const URL_FOR = (p) => FX.url + p;
const fmt = (reqs) => JSON.stringify(reqs.map((r) => `${r.method} ${r.path}`));

// window.__pwned in the page and in every frame (frames that cannot be inspected are reported).
async function pwned(page) {
  const out = [];
  for (const f of page.frames()) {
    try {
      const v = await f.evaluate(() => (typeof window.__pwned === 'undefined' ? null : String(window.__pwned)));
      if (v !== null) out.push(`${f.url()}: __pwned = ${v}`);
    } catch (e) {
      out.push(`${f.url()}: cannot inspect the frame: ${e.message.split('\n')[0]}`);
    }
  }
  return out;
}

// Waits until every child frame of the page has loaded (a frame that never loads is reported).
async function framesLoaded(page) {
  for (const f of page.frames()) {
    if (f === page.mainFrame()) continue;
    await f.waitForLoadState('load', { timeout: 10000 });
  }
}

// The main document's conversation holds text and our own elements only: no markup from the mail.
async function injected(page) {
  return page.$$eval('#conversation script, #conversation img, #conversation svg, #conversation style, '
    + '#conversation object, #conversation embed, #conversation form, #conversation link, #conversation meta, '
    + '#conversation base, #conversation [onerror], #conversation [onload], #conversation iframe:not([sandbox])',
  (els) => els.map((e) => e.outerHTML.slice(0, 120)));
}

// What a frame's DOM (Chromium's parse of the sanitised HTML: where mutation XSS would show) holds
// that could run or fetch.
async function dangerousDom(frame) {
  return frame.evaluate(() => {
    const bad = [];
    for (const e of document.querySelectorAll('*')) {
      const tag = e.tagName.toLowerCase();
      if (tag === 'meta' && e.attributes.length === 1 && e.hasAttribute('charset')) continue;  // the server's own
      if (['script', 'iframe', 'frame', 'object', 'embed', 'form', 'input', 'button', 'link', 'meta', 'base',
        'svg', 'math', 'video', 'audio', 'source', 'picture', 'applet', 'template', 'noscript'].includes(tag)) bad.push(`<${tag}>`);
      for (const a of e.attributes) {
        const n = a.name.toLowerCase();
        const v = a.value.replace(/[\s\u0000-\u001f]/g, '').toLowerCase();
        if (n.startsWith('on')) bad.push(`<${tag} ${n}>`);
        if (['srcset', 'background', 'poster', 'data', 'action', 'formaction', 'lowsrc', 'dynsrc', 'ping', 'xlink:href', 'srcdoc'].includes(n)) bad.push(`<${tag} ${n}=${a.value.slice(0, 60)}>`);
        if (n === 'src' && !v.startsWith('data:image/png') && !v.startsWith('data:image/gif') && !v.startsWith('data:image/jpeg')) bad.push(`<${tag} src=${a.value.slice(0, 60)}>`);
        if (n === 'href' && !/^(https?:|mailto:)/.test(v)) bad.push(`<${tag} href=${a.value.slice(0, 60)}>`);
        if (n === 'style' && /url\(|@import|expression\(|javascript:|binding|behavior|image-set/.test(v)) bad.push(`<${tag} style=${a.value.slice(0, 60)}>`);
      }
    }
    for (const s of document.querySelectorAll('style')) {
      const v = s.textContent.replace(/\s/g, '').toLowerCase();
      if (/url\(|@import|expression\(|javascript:|binding|behavior|image-set|@font-face/.test(v)) bad.push(`<style>${s.textContent.slice(0, 80)}`);
    }
    return bad;
  });
}

// The console lines that mean one wall stopped what another let through (a frame refused by
// frame-ancestors 'none', as the page's HTML frames were when their URLs 404ed, counts too).
const wallLines = (watch) => watch.console.filter((c) => /Blocked script execution|Refused to (load|execute|apply|frame|connect)|Content Security Policy/i.test(c));

check('attacks opened in the page run nothing and fetch nothing', async () => {
  const { context, page, watch } = await appPage();
  const before = (await beacon()).length;
  const problems = [];
  // all of them from a search; each opened with a click on its row, read, and left with u
  await key(page, '/');
  await page.keyboard.type('subject:hostile');
  await page.keyboard.press('Enter');
  const listed = await waitRows(page, 'the attack conversations', (rs) => rs.length === FX.attacks.length);
  for (const a of FX.attacks) {
    const row = listed.find((x) => x.subject === a.subject);
    assert.ok(row, `no row with the subject ${a.subject}`);
    if (await page.isVisible('#conversation')) {
      await key(page, 'u');
      await page.locator('#list').waitFor({ state: 'visible' });
    }
    await page.click(`#list li[data-id="${row.id}"]`);
    await until(`conversation ${a.key} shown`, async () => (await page.isVisible('#conversation'))
      && (await page.textContent('#conversation h2')) === a.subject);
    await framesLoaded(page);
    for (const p of await pwned(page)) problems.push(`${a.key}: ${p}`);
    for (const i of await injected(page)) problems.push(`${a.key}: mail markup in the page: ${i}`);
    if (a.key === 'headers') {
      // the markup in From, Subject and the text body is shown as text
      const text = await page.textContent('#conversation');
      assert.ok(text.includes("<script>window.__pwned='from'</script>"), 'From name not shown as text');
      assert.ok(text.includes("<script>window.__pwned='text'</script>"), 'text body not shown as text');
      const links = await page.$$eval('#conversation a', (l) => l.map((x) => x.getAttribute('href')));
      assert.ok(links.every((h) => /^(https?:\/\/|\/api\/v1\/mail\/)/.test(h)), `links in the text body: ${JSON.stringify(links)}`);
      await shot(page, 'mail-hostile-headers.png');
    }
  }
  // let late loads (a refresh after 1 s, lazy images) happen
  await page.waitForTimeout(1200);
  for (const p of await pwned(page)) problems.push(`at the end: ${p}`);
  const reqs = (await beacon()).slice(before);
  assert.deepEqual(problems, []);
  assert.deepEqual(watch.dialogs, [], 'dialogs opened');
  assert.deepEqual(watch.errors, [], 'uncaught exceptions');
  assert.equal(reqs.length, 0, `the counting server got requests: ${fmt(reqs)}`);
  await context.close();
});

check('the sanitised HTML, framed as the page frames it and opened on its own, runs and fetches nothing', async () => {
  // Every attack's HTML body framed by hand (emails/ID/html, with the page's sandbox and referrer
  // policy: what the page does, without the page's own code between), and also opened as a
  // top-level document (where only its CSP stands).
  const { context, page, watch } = await appPage();
  const before = (await beacon()).length;
  const problems = [];
  let framed = 0;
  const top = await context.newPage();
  top.on('dialog', (d) => { problems.push(`top-level: dialog ${d.message()}`); d.dismiss().catch(() => {}); });
  const all = await api(page, 'threads?q=' + encodeURIComponent('subject:hostile') + '&limit=200');
  assert.equal(all.json.threads.length, FX.attacks.length, all.text.slice(0, 300));
  for (const a of FX.attacks) {
    const t = all.json.threads.find((x) => x.subject === a.subject);
    assert.ok(t, `no conversation ${a.subject}`);
    const conv = await conversation(page, t.id);
    for (const e of conv.emails) {
      if (e.htmlBody === undefined) continue;
      framed++;
      const src = API + 'emails/' + e.id + '/html';
      await page.evaluate((s) => new Promise((res) => {
        document.querySelectorAll('iframe.harness').forEach((f) => f.remove());
        const f = document.createElement('iframe');
        f.className = 'harness';
        f.setAttribute('sandbox', 'allow-popups allow-popups-to-escape-sandbox');
        f.setAttribute('referrerpolicy', 'no-referrer');
        f.onload = () => res();
        f.src = s;
        document.body.append(f);
      }), src);
      const frame = page.frames().find((f) => f.url().endsWith(src));
      assert.ok(frame, `no frame for ${src}`);
      await page.waitForTimeout(100);
      for (const p of await pwned(page)) problems.push(`${a.key} framed: ${p}`);
      for (const d of await dangerousDom(frame)) problems.push(`${a.key}: the framed document has ${d}`);
      // on its own: a top-level document of the page's origin
      const res = await top.goto(URL_FOR(src));
      assert.equal(res.status(), 200, `${src}: ${res.status()}`);
      const csp = res.headers()['content-security-policy'] || '';
      if (!/default-src 'none'/.test(csp)) problems.push(`${a.key}: the HTML's CSP is ${csp}`);
      for (const p of await pwned(top)) problems.push(`${a.key} top-level: ${p}`);
    }
  }
  await top.close();
  assert.ok(framed >= 20, `only ${framed} attack messages have an HTML body`);
  await page.waitForTimeout(1500);
  const reqs = (await beacon()).slice(before);
  assert.deepEqual(problems, []);
  assert.deepEqual(watch.dialogs, [], 'dialogs opened');
  assert.deepEqual(wallLines(watch), [], 'the sanitiser let through something the sandbox or the CSP had to stop');
  assert.equal(reqs.length, 0, `the counting server got requests: ${fmt(reqs)}`);

  // remote content on request (?remote=1, what "Show them" asks for): exactly the one image
  const ri = msg('remote-image');
  const conv = await conversation(page, (await threadOf(page, ri.mid)).id);
  assert.equal(conv.emails[0].remoteBlocked, true, 'remoteBlocked is not set for a message with a remote image');
  const plain = await conversation(page, (await threadOf(page, msg('news1').mid)).id);
  assert.equal(plain.emails[0].remoteBlocked, false, 'remoteBlocked set for a newsletter without remote content');
  const mark = (await beacon()).length;
  await page.evaluate((s) => new Promise((res) => {
    const f = document.createElement('iframe');
    f.setAttribute('sandbox', 'allow-popups allow-popups-to-escape-sandbox');
    f.setAttribute('referrerpolicy', 'no-referrer');
    f.onload = () => res();
    f.src = s;
    document.body.append(f);
  }), API + 'emails/' + conv.emails[0].id + '/html?remote=1');
  await until('the remote image requested', async () => (await beacon()).length > mark, { timeout: 5000 });
  await page.waitForTimeout(1000);
  const got = (await beacon()).slice(mark);
  assert.deepEqual(got.map((r) => `${r.method} ${r.path}`), ['GET /remote-image.png']);
  assert.equal(got[0].headers.referer, undefined, `Referer sent: ${got[0].headers.referer}`);
  assert.equal(got[0].headers.cookie, undefined, 'a cookie went to the remote server');
  await context.close();
});

check('Show them loads exactly the remote image of that message', async () => {
  const { context, page } = await appPage();
  const ri = msg('remote-image');
  const t = await threadOf(page, ri.mid);
  const before = (await beacon()).length;
  await openByHash(page, 'inbox', t.id);
  await page.locator('#conversation .blocked').waitFor({ state: 'visible' });
  await framesLoaded(page);
  await page.waitForTimeout(300);
  assert.equal((await beacon()).length, before, 'a request before "Show them"');
  const frame = page.frames().find((f) => f !== page.mainFrame());
  assert.ok(frame, 'no frame for the HTML body');
  assert.match(await frame.evaluate(() => document.body.innerText), /A picture:/,
    `the frame does not show the message: ${frame.url()}`);
  await page.click('#conversation .blocked button:has-text("Show them")');
  await until('the remote image requested', async () => (await beacon()).length > before, { timeout: 5000 });
  await page.waitForTimeout(1000);
  const got = (await beacon()).slice(before);
  assert.deepEqual(got.map((r) => `${r.method} ${r.path}`), ['GET /remote-image.png']);
  assert.equal(got[0].headers.referer, undefined);
  assert.equal(await page.$$eval('#conversation .blocked', (b) => b.length), 0, 'the notice stays after "Show them"');
  assert.deepEqual(await pwned(page), []);
  await context.close();
});

check('HTML bodies show in the page and Show original opens the file', async () => {
  const { context, page, watch } = await appPage();
  const n = msg('news1');
  const t = await threadOf(page, n.mid);
  await openByHash(page, 'inbox', t.id);
  await page.locator('#conversation iframe').waitFor();
  await framesLoaded(page);
  const frame = page.frames().find((f) => f !== page.mainFrame());
  const text = await frame.evaluate(() => document.body ? document.body.innerText : '');
  const bad = watch.bad.filter((b) => b.includes('/emails/'));
  const [popup] = await Promise.all([
    page.waitForEvent('popup'),
    page.click('#conversation a:has-text("Show original")'),
  ]);
  await popup.waitForLoadState();
  const original = await popup.evaluate(() => document.body.innerText);
  await shot(page, 'mail-html-conversation.png');
  assert.deepEqual(bad, [], 'the page got errors for the message');
  assert.match(text, /Newsletter 1/, `the frame shows: ${JSON.stringify(text.slice(0, 200))} (${frame.url()})`);
  assert.ok(original.includes(`Message-ID: <${n.mid}>`), `Show original shows: ${original.slice(0, 200)}`);
  await context.close();
});
