// Browser tests of the web view at /mail/ (node:test + playwright-core + Debian chromium): login,
// the Inbox, search against `mailkeep search`, Gmail's keys with the result checked over IMAP
// (through the pytest oracle), `!` against `mailkeep spam classify`, a reply checked at the
// smarthost, a filter made in the editor meeting mail sent through SMTP, an IMAP client's move seen
// by the page, focus, a phone-sized viewport and 200 % zoom. Run by tests/e2e/test_mail_browser.py,
// one test per pytest test (--test-name-pattern); each test has its own conversations, so they can
// run alone or in any order.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  API, appPage, check, FX, PAGE, api, close, conversation, imapFlagsOf, imapFolders, key, launch, login, msg, newPage,
  openByHash, oracle, rows, shot, threadOf, until, untilFlags, waitRows,
} from './mail_lib.mjs';

before(launch);
after(close);

// The account tag the API puts before the index's conversation ids ("T" + 8 hex digits).
const cliId = (apiId) => apiId.replace(/^T[0-9a-f]{8}/, '');

function noErrors(watch, allowBad = []) {
  assert.deepEqual(watch.errors, [], 'uncaught exceptions in the page');
  assert.deepEqual(watch.unexpectedBad().filter((b) => !allowBad.some((re) => re.test(b))), [], 'HTTP errors the page got');
  assert.deepEqual(watch.consoleErrors(), [], 'console errors');
}

async function indexOfSubject(page, subject) {
  const r = await rows(page);
  const i = r.findIndex((x) => x.subject === subject);
  assert.ok(i >= 0, `no row "${subject}" in ${JSON.stringify(r.map((x) => x.subject))}`);
  return { i, rows: r };
}

// Moves the list cursor to row i with j presses (one past it, then k back, so both keys are used).
async function cursorTo(page, i) {
  const n = (await rows(page)).length;
  assert.ok(i + 1 < n, `row ${i} is the last one`);
  let at = (await rows(page)).findIndex((x) => x.cursor);
  assert.ok(at >= 0, 'no cursor row');
  for (; at < i + 1; at++) await key(page, 'j');
  await key(page, 'k');
  const r = await rows(page);
  assert.equal(r.findIndex((x) => x.cursor), i, `cursor not on row ${i} after j/k`);
}

check('login: a wrong password shows an error and no app; the Inbox lists conversations', async () => {
  const { context, page, watch } = await newPage();
  await page.goto(PAGE);
  await page.locator('#login').waitFor({ state: 'visible' });
  // "no app": hidden (the attribute; that it is also invisible is the next test), no conversations
  // in it, and nothing asked of the API but the session probe and the login
  const apiCalls = [];
  page.on('request', (q) => { if (q.url().includes(API)) apiCalls.push(`${q.method()} ${q.url().split(API)[1]}`); });
  const noApp = async () => {
    assert.equal(await page.evaluate(() => document.getElementById('app').hidden), true, '#app is not hidden');
    assert.equal(await page.$$eval('#list li', (l) => l.length), 0, 'conversations listed before a login');
    assert.equal(await page.$$eval('#mailboxes li', (l) => l.length), 0, 'mailboxes listed before a login');
  };
  await noApp();
  await page.fill('#username', FX.users.alice.user);
  await page.fill('#password', 'not-the-password');
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith(API + 'session') && r.request().method() === 'POST'),
    page.click('#login-form button[type=submit]'),
  ]);
  assert.equal(res.status(), 401);
  await until('login error shown', async () => (await page.textContent('#login-error')).trim());
  assert.match(await page.textContent('#login-error'), /wrong user name or password/);
  assert.ok(await page.isVisible('#login-error'));
  await noApp();
  assert.deepEqual(apiCalls, ['POST session'], 'API requests after a failed login');
  assert.ok(await page.isVisible('#login'));
  assert.equal(await page.inputValue('#password'), '', 'the password stays in the field');
  assert.equal((await page.context().cookies()).length, 0, 'a cookie after a failed login');

  await page.fill('#password', FX.users.alice.password);
  await page.click('#login-form button[type=submit]');
  await page.locator('#login').waitFor({ state: 'hidden' });
  assert.equal(await page.evaluate(() => document.getElementById('app').hidden), false);
  assert.equal((await page.textContent('#user')).trim(), FX.users.alice.user);
  await page.locator('#list li').first().waitFor();

  // the Inbox: the same conversations, in the same order, as `mailkeep search in:inbox`
  const cli = await oracle('search', { query: 'in:inbox' });
  const r = await rows(page);
  assert.ok(cli.total > 50, `the fixture should fill more than one page (in:inbox total ${cli.total})`);
  assert.equal(r.length, 50);
  assert.deepEqual(r.map((x) => cliId(x.id)), cli.conversations.slice(0, 50).map((c) => c.id));
  assert.deepEqual(r.map((x) => x.subject), cli.conversations.slice(0, 50).map((c) => c.subject));
  assert.equal((await page.textContent('#range')).trim(), `1–50 of ${cli.total}`);
  for (const x of r) {
    assert.ok(x.from.trim(), `row without a sender: ${JSON.stringify(x)}`);
    assert.ok(x.subject.trim(), `row without a subject: ${JSON.stringify(x)}`);
    assert.match(x.snippet, /^ — \S/, `row without a snippet: ${JSON.stringify(x)}`);
    assert.ok(x.date.trim(), `row without a date: ${JSON.stringify(x)}`);
  }
  // conversations show their size; markup in headers is text
  const trip = r.find((x) => x.subject === 'Trip to Lisbon');
  assert.match(trip.from, /Frank Ocean, Grace Hopper \(2\)|Grace Hopper, Frank Ocean \(2\)/);
  assert.equal(r[0].subject, msg('headers').subject, 'the header attack is the newest conversation');
  assert.equal(r[0].from, "<script>window.__pwned='from'</script>");
  // unread rows are bold (the fixture's mail is all unread at first: only other tests read some)
  const unread = r.filter((x) => x.unread);
  assert.ok(unread.length >= 40, `only ${unread.length} unread rows`);
  for (const x of r) {
    const cliConv = cli.conversations.find((c) => c.id === cliId(x.id));
    assert.equal(x.unread, cliConv.unread, `row "${x.subject}": class unread ${x.unread}, CLI unread ${cliConv.unread}`);
    assert.ok(x.unread ? Number(x.weight) >= 700 : Number(x.weight) < 600, `row "${x.subject}" unread=${x.unread} has font-weight ${x.weight}`);
  }
  await shot(page, 'mail-inbox.png');

  // paging: the second page has the rest
  await page.click('#older');
  await until('page 2', async () => (await page.textContent('#range')).trim() === `51–${cli.total} of ${cli.total}`);
  const r2 = await rows(page);
  assert.deepEqual(r2.map((x) => cliId(x.id)), cli.conversations.slice(50).map((c) => c.id));
  await page.click('#newer');
  await until('page 1 again', async () => (await page.textContent('#range')).trim().startsWith('1–50'));

  // a conversation: click, two messages, the newest unread open; both are \Seen over IMAP afterwards
  await page.click('#list li >> text=Trip to Lisbon');
  await page.locator('#conversation').waitFor({ state: 'visible' });
  assert.equal((await page.textContent('#conversation h2')).trim(), 'Trip to Lisbon');
  const who = await page.$$eval('#conversation .message .who', (e) => e.map((x) => x.textContent));
  assert.deepEqual(who, ['Frank Ocean', 'Grace Hopper']);
  assert.ok((await page.textContent('#conversation')).includes('Flights are booked for June.'));
  assert.ok(await page.isHidden('#list'));
  await shot(page, 'mail-conversation.png');
  await untilFlags('Trip to Lisbon \\Seen over IMAP', ['trip1', 'trip2'].map((k) => msg(k).mid), (f) => f.includes('\\Seen'));
  await key(page, 'u');
  await page.locator('#list').waitFor({ state: 'visible' });
  assert.ok(await page.isHidden('#conversation'));
  noErrors(watch, [/^401 POST .*\/api\/v1\/mail\/session$/]);
  await context.close();
});

check('logged out: nothing of the app is visible (login screen, failed login, logout)', async () => {
  const { context, page } = await newPage();
  const visibleParts = () => page.evaluate(() => ['#app', 'header', '#search', '#toolbar', '#logout', '#sidebar']
    .filter((s) => { const e = document.querySelector(s); const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden'; }));
  await page.goto(PAGE);
  await page.locator('#login').waitFor({ state: 'visible' });
  const shown = {};
  shown.start = await visibleParts();
  await page.fill('#username', FX.users.alice.user);
  await page.fill('#password', 'not-the-password');
  await page.click('#login-form button[type=submit]');
  await until('login error shown', async () => (await page.textContent('#login-error')).trim());
  shown.failed = await visibleParts();
  await login(page);
  await page.click('#logout');
  await page.locator('#login').waitFor({ state: 'visible' });
  shown.logout = await visibleParts();
  shown.logoutRows = await page.$$eval('#list li', (l) => l.length);
  await shot(page, 'mail-logged-out.png');
  assert.deepEqual(shown, { start: [], failed: [], logout: [], logoutRows: 0 },
    'parts of the app are visible while logged out (#app { display: grid } in mail.css beats the hidden attribute)');
  await context.close();
});

check('read: a conversation read and left with u is no longer bold', async () => {
  const { context, page } = await appPage();
  const t = await threadOf(page, msg('party1').mid);
  let r = await waitRows(page, 'Garden party row', (rs) => rs.some((x) => x.id === t.id));
  assert.ok(r.find((x) => x.id === t.id).unread, 'Garden party is unread at first');
  await page.click(`#list li[data-id="${t.id}"]`);
  await page.locator('#conversation').waitFor({ state: 'visible' });
  await untilFlags('both Garden party messages \\Seen', [msg('party1').mid, msg('party2').mid], (f) => f.includes('\\Seen'));
  await key(page, 'u');
  await page.locator('#list').waitFor({ state: 'visible' });
  await page.waitForTimeout(500);
  r = await rows(page);
  assert.equal(r.find((x) => x.id === t.id).unread, false,
    'the row of the conversation just read is still bold (class "unread") after u');
  await context.close();
});

check('search: / then a query with operators lists what mailkeep search finds', async () => {
  const { context, page, watch } = await appPage();
  const queries = [
    'from:carol subject:budget after:2026/01/01 -label:x',
    'has:attachment after:2026/02/01 -label:x',
    'subject:note before:2026/06/01 -from:erin',
    '(from:frank OR from:grace) after:2026-05-01 -subject:note',
  ];
  let first = true;
  for (const q of queries) {
    const cli = await oracle('search', { query: q });
    assert.ok(cli.conversations.length > 0 && cli.conversations.length < 50, `${q}: ${cli.conversations.length} conversations`);
    await key(page, '/');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'search', '/ does not focus the search field');
    await page.fill('#search', '');
    await page.keyboard.type(q);
    const [res] = await Promise.all([
      page.waitForResponse((x) => x.url().includes(API + 'threads?q=')),
      page.keyboard.press('Enter'),
    ]);
    assert.equal(res.status(), 200, await res.text());
    const want = cli.conversations.map((c) => c.id);
    const r = await waitRows(page, `rows of ${q}`, (rs) => rs.length === want.length && rs.every((x, i) => cliId(x.id) === want[i]))
      .catch(async (e) => { throw new Error(`${e.message}\nCLI: ${JSON.stringify(cli.conversations.map((c) => [c.id, c.subject]))}\npage: ${JSON.stringify((await rows(page)).map((x) => [x.id, x.subject]))}`); });
    assert.deepEqual(r.map((x) => x.subject), cli.conversations.map((c) => c.subject), q);
    assert.equal((await page.textContent('#range')).trim(), `1–${cli.total} of ${cli.total}`);
    assert.equal(await page.inputValue('#search'), q, 'the search field lost the query');
    assert.equal(await page.evaluate(() => decodeURIComponent(location.hash)), '#search/' + q);
    if (first) { await shot(page, 'mail-search.png'); first = false; }
  }
  noErrors(watch);
  await context.close();
});

check('keys: j k o y archive a conversation (IMAP: in Archive, not in INBOX)', async () => {
  const { context, page, watch } = await appPage();
  const t = await threadOf(page, msg('budget1').mid);
  const { i } = await indexOfSubject(page, 'Budget 2026');
  await cursorTo(page, i);
  await key(page, 'o');
  await page.locator('#conversation').waitFor({ state: 'visible' });
  assert.equal((await page.textContent('#conversation h2')).trim(), 'Budget 2026');
  assert.equal(await page.$$eval('#conversation .message', (m) => m.length), 4);
  await key(page, 'y');
  await page.locator('#list').waitFor({ state: 'visible' });
  await waitRows(page, 'Budget 2026 gone from the Inbox', (rs) => rs.length > 0 && !rs.some((x) => x.id === t.id));
  assert.match(await page.textContent('#status'), /Archived/);
  const st = await oracle('imap_state', { mids: ['budget1', 'budget2', 'budget3', 'budget4'].map((k) => msg(k).mid) });
  for (const [mid, copies] of Object.entries(st)) {
    assert.deepEqual(copies.map((c) => c[0]), ['Archive'], `<${mid}> over IMAP: ${JSON.stringify(copies)}`);
  }
  // the Archive lists it
  await page.click('#sidebar a[href="#archive"]');
  await waitRows(page, 'Budget 2026 in Archive', (rs) => rs.some((x) => x.id === t.id));
  noErrors(watch);
  await context.close();
});

check('keys: l labels, s stars, Shift+U marks unread, z undoes (IMAP flags follow)', async () => {
  const { context, page, watch } = await appPage();
  const mids = ['report1', 'report2', 'report3'].map((k) => msg(k).mid);
  const t = await threadOf(page, mids[0]);
  // the conversation is on the second page of the Inbox (older mail): open it from a search
  await key(page, '/');
  await page.keyboard.type('subject:"quarterly report"');
  await page.keyboard.press('Enter');
  await waitRows(page, 'the report conversation', (rs) => rs.length === 1 && rs[0].id === t.id);
  await key(page, 'o');
  await page.locator('#conversation').waitFor({ state: 'visible' });
  await untilFlags('report messages \\Seen after opening', mids, (f) => f.includes('\\Seen'));

  // l: the picker; a new name + Enter applies it
  await key(page, 'l');
  await page.locator('#picker').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => document.activeElement.id), 'picker-input');
  await page.keyboard.type('Project-X');
  assert.deepEqual(await page.$$eval('#picker-list li', (l) => l.map((x) => x.textContent)), ['Project-X']);
  await page.keyboard.press('Enter');
  await page.locator('#picker').waitFor({ state: 'hidden' });
  const link = page.locator('#sidebar a[href="#label%3AProject-X"]');
  await link.waitFor({ state: 'visible' });
  assert.match(await link.textContent(), /^Project-X/);
  const byApi = await api(page, 'threads?mailbox=' + encodeURIComponent('label:Project-X'));
  assert.equal(byApi.status, 200, byApi.text);
  assert.deepEqual(byApi.json.threads.map((x) => x.id), [t.id]);
  const conv = await conversation(page, t.id);
  for (const e of conv.emails) assert.deepEqual(e.labels, ['Project-X'], `email ${e.id} labels`);
  // the label's view lists it, with the label on the row
  await link.click();
  let r = await waitRows(page, 'the label view', (rs) => rs.length === 1 && rs[0].id === t.id);
  assert.deepEqual(r[0].labels, ['Project-X']);

  // s: star (IMAP \Flagged on every message)
  await page.click(`#list li[data-id="${t.id}"]`);
  await page.locator('#conversation').waitFor({ state: 'visible' });
  await key(page, 's');
  await untilFlags('\\Flagged over IMAP', mids, (f) => f.includes('\\Flagged'));
  // Shift+U: unread (IMAP: no \Seen), the conversation closes, its row is bold
  await page.waitForTimeout(300);
  await key(page, 'Shift+U');
  await page.locator('#list').waitFor({ state: 'visible' });
  await untilFlags('\\Seen cleared over IMAP', mids, (f) => !f.includes('\\Seen'));
  r = await waitRows(page, 'the row unread', (rs) => rs.length === 1 && rs[0].unread);
  // z: undo the last action (the unread): \Seen again, \Flagged kept
  await key(page, 'z');
  await untilFlags('undone: \\Seen again over IMAP (\\Flagged kept)', mids, (f) => f.includes('\\Seen') && f.includes('\\Flagged'));
  await waitRows(page, 'the row read again', (rs) => rs.length === 1 && !rs[0].unread);
  assert.match(await page.textContent('#status'), /Undone/);
  // a second z has nothing left to undo
  await key(page, 'z');
  await until('nothing to undo', async () => /Nothing to undo/.test(await page.textContent('#status')));
  const final = await imapFlagsOf(mids);
  for (const m of mids) assert.deepEqual(final[m], ['\\Flagged', '\\Seen'], `<${m}> over IMAP`);
  noErrors(watch);
  await context.close();
});

check('an IMAP client moves a message to Trash: after a reload the Trash shows it', async () => {
  const { context, page, watch } = await appPage();
  const m = msg('single05');
  const t = await threadOf(page, m.mid);
  await oracle('imap_move', { mid: m.mid, from: 'INBOX', to: 'Trash' });
  assert.deepEqual(await imapFolders(m.mid), ['Trash']);
  const started = Date.now();
  await until('the Trash lists the conversation after a reload', async () => {
    await page.reload();
    await page.locator('#list li').first().waitFor({ state: 'visible' });
    await Promise.all([
      page.waitForResponse((x) => x.url().includes('threads?mailbox=trash'), { timeout: 5000 }).catch(() => null),
      page.evaluate(() => { location.hash = '#trash'; }),
    ]);
    await page.waitForTimeout(100);
    return (await rows(page)).some((x) => x.id === t.id);
  }, { timeout: 20000, interval: 500 });
  console.log(`the index followed Dovecot's move within ${Date.now() - started} ms`);
  const r = await rows(page);
  assert.equal(r.find((x) => x.id === t.id).subject, m.subject);
  await page.evaluate(() => { location.hash = '#inbox'; });
  await waitRows(page, 'gone from the Inbox', (rs) => rs.length > 0 && !rs.some((x) => x.id === t.id));
  noErrors(watch);
  await context.close();
});

check('keys: ! moves the conversation to Junk (IMAP: in Junk) and its spam score rises', async () => {
  const { context, page, watch } = await appPage();
  const m = msg('single04');
  const t = await threadOf(page, m.mid);
  // the archive file as `mailkeep spam classify` scores it with the model the server retrains
  const before = await oracle('spam_score', { mid: m.mid });
  assert.equal(before.folder, 'INBOX', `classified ${before.path}`);
  const { i } = await indexOfSubject(page, m.subject);
  await cursorTo(page, i);
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith(API + 'modify') && r.request().method() === 'POST'),
    key(page, '!'),
  ]);
  assert.equal(res.status(), 200, await res.text());
  const answer = await res.json();
  assert.equal(JSON.parse(res.request().postData()).trainSpam, true, 'the page did not ask to train the filter');
  assert.equal(answer.trained, 1, `the server trained ${answer.trained} message(s): ${JSON.stringify(answer)}`);
  await waitRows(page, 'gone from the Inbox', (rs) => rs.length > 0 && !rs.some((x) => x.id === t.id));
  assert.match(await page.textContent('#status'), /spam|Junk/i);
  assert.deepEqual(await imapFolders(m.mid), ['Junk']);
  await page.click('#sidebar a[href="#junk"]');
  await waitRows(page, 'listed in Junk', (rs) => rs.some((x) => x.id === t.id));
  // the server rewrote the model: the same message (now in .Junk) scores higher
  const after = await until('the spam score changed', async () => {
    const s = await oracle('spam_score', { mid: m.mid });
    return s.score !== before.score ? s : null;
  }, { timeout: 10000, interval: 300 });
  assert.equal(after.folder, 'Junk', `classified ${after.path}`);
  assert.ok(after.score > before.score, `spam score before ! ${before.score} (${before.verdict}), after ${after.score} (${after.verdict})`);
  console.log(`spam score of ${m.mid}: ${before.score} (${before.verdict}) -> ${after.score} (${after.verdict})`);
  noErrors(watch);
  await context.close();
});

check('keys: r sends a reply: at the smarthost with In-Reply-To and References, and in the conversation', async () => {
  const { context, page, watch } = await appPage();
  const m = msg('single17');                     // Heidi Klum <heidi@remote.test>, one message
  const t = await threadOf(page, m.mid);
  // as a user finds it: a search, o
  await key(page, '/');
  await page.keyboard.type(`subject:"${m.subject}"`);
  await page.keyboard.press('Enter');
  await waitRows(page, 'the conversation found', (rs) => rs.length === 1 && rs[0].id === t.id);
  await key(page, 'o');
  await page.locator('#conversation').waitFor({ state: 'visible' });
  assert.equal((await page.textContent('#conversation h2')).trim(), m.subject);
  assert.equal(await page.$$eval('#conversation .message', (x) => x.length), 1);
  const mark = (await oracle('captured', { since: 1e9 })).count;

  await key(page, 'r');
  await page.locator('#compose').waitFor({ state: 'visible' });
  assert.equal(await page.inputValue('#compose-to'), 'heidi@remote.test');
  assert.equal(await page.inputValue('#compose-subject'), 'Re: ' + m.subject);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'compose-text', 'r does not put the cursor in the text');
  const words = `Thanks Heidi, noted (${Date.now().toString(36)}).`;
  await page.keyboard.type(words);
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith(API + 'send') && r.request().method() === 'POST', { timeout: 30000 }),
    page.click('#compose button[type=submit]'),
  ]);
  assert.equal(res.status(), 200, await res.text());
  const sent = await res.json();
  await until('"Message sent"', async () => /Message sent/.test(await page.textContent('#status')));
  assert.ok(await page.isHidden('#compose'), 'the compose form stays open after sending');

  // the smarthost (the capture upstream) got exactly one message, for Heidi
  const forHeidi = async () => (await oracle('captured', { since: mark })).messages.filter((x) => x.rcpt_tos.includes('heidi@remote.test'));
  await until('the reply at the smarthost', async () => (await forHeidi()).length > 0, { timeout: 15000, interval: 200 });
  await page.waitForTimeout(500);
  const got = await forHeidi();
  assert.equal(got.length, 1, `messages for heidi@remote.test: ${JSON.stringify(got.map((x) => x.headers.subject))}`);
  const r = got[0];
  const h = (name) => { const v = r.headers[name] || []; assert.equal(v.length, 1, `${name}: ${JSON.stringify(v)}`); return v[0]; };
  assert.equal(r.mail_from, FX.users.alice.user);
  assert.deepEqual(r.rcpt_tos, ['heidi@remote.test']);
  assert.equal(h('in-reply-to'), `<${m.mid}>`);
  assert.ok(h('references').split(/\s+/).includes(`<${m.mid}>`), `References: ${h('references')}`);
  assert.equal(h('subject'), 'Re: ' + m.subject);
  assert.match(h('from'), /(^|<)alice@example\.org>?$/);
  assert.match(h('to'), /heidi@remote\.test/);
  assert.ok(r.text.includes(words), `the text sent: ${JSON.stringify(r.text.slice(0, 300))}`);
  assert.ok(r.text.includes('> Single message 17'), `the reply does not quote the message: ${JSON.stringify(r.text.slice(0, 300))}`);
  const replyMid = h('message-id').replace(/^<|>$/g, '');
  assert.equal(replyMid, String(sent.messageId).replace(/^<|>$/g, ''), 'the API named another Message-ID');

  // the conversation shows the Sent copy as its second message (the page reloads it by itself; a
  // reload of the page, as a user would, if the index was slower than that)
  const started = Date.now();
  await until('the reply in the conversation', async () => {
    if (Date.now() - started > 4000) {
      await page.reload();
      await page.locator('#conversation').waitFor({ state: 'visible' });
    }
    return (await page.$$eval('#conversation .message', (x) => x.length)) === 2;
  }, { timeout: 20000, interval: 500 });
  console.log(`the reply joined the conversation after ${Date.now() - started} ms`);
  const who = await page.$$eval('#conversation .message .who', (e) => e.map((x) => x.textContent));
  assert.deepEqual(who, ['Heidi Klum', FX.users.alice.user]);
  const conv = await conversation(page, t.id);
  assert.equal(conv.emails.length, 2);
  assert.equal(String(conv.emails[1].messageId).replace(/^<|>$/g, ''), replyMid);
  assert.ok((conv.emails[1].textBody || '').includes(words), 'the Sent copy in the conversation lacks the text');
  assert.deepEqual(await imapFolders(replyMid), ['Sent'], 'the Sent copy over IMAP');
  noErrors(watch);
  await context.close();
});

check('filters: a filter made in the editor (skip the Inbox, label Builds) meets 20 matching messages sent through SMTP', async () => {
  const { context, page, watch } = await appPage();
  await page.click('#sidebar a[href="#filters"]');
  await page.locator('#filters').waitFor({ state: 'visible' });
  await page.locator('#filter-list li').first().waitFor();
  // by mouse and keys: From, the label, "Skip the Inbox", Create filter
  const form = page.locator('#filter-form');
  await form.locator('input[name=from]').click();
  await page.keyboard.type('robot@builds.test');
  await form.locator('input[name=label]').click();
  await page.keyboard.type('Builds');
  await form.locator('label', { hasText: 'Skip the Inbox' }).click();
  assert.equal(await form.locator('input[name=shouldArchive]').isChecked(), true);
  await shot(page, 'mail-filter-form.png');
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith(API + 'filters') && r.request().method() === 'POST'),
    form.locator('button[type=submit]').click(),
  ]);
  assert.equal(res.status(), 201, await res.text());
  const made = await res.json();
  assert.deepEqual(JSON.parse(res.request().postData()), { from: 'robot@builds.test', label: 'Builds', shouldArchive: true });
  const item = page.locator('#filter-list li', { hasText: 'robot@builds.test' });
  await item.waitFor();
  assert.equal((await item.locator('code').textContent()).trim(), made.query);
  assert.match(made.query, /^from:\(?robot@builds\.test\)?$/);
  assert.match(await item.textContent(), /label Builds, skip Inbox/);
  assert.match(await page.textContent('#status'), /Filter created/);
  await shot(page, 'mail-filter-editor.png');
  // the API and the CLI have it as the editor shows it
  const listed = (await api(page, 'filters')).json.list.filter((f) => f.id === made.id);
  assert.equal(listed.length, 1);
  assert.deepEqual([listed[0].from, listed[0].label, listed[0].shouldArchive, listed[0].shouldMarkAsRead, listed[0].shouldTrash],
    ['robot@builds.test', 'Builds', true, false, false]);
  const cli = (await oracle('filter_list')).lines.map((l) => l.split('\t'));
  assert.deepEqual(cli.filter((l) => l[0] === made.id), [[made.id, made.query, 'label=Builds skip-inbox']],
    `mailkeep filter list: ${JSON.stringify(cli)}`);

  // 20 matching messages through SMTP, dated now (any left in the Inbox would be its first rows)
  const sent = await oracle('send', { count: 20 });
  const mids = sent.map((x) => x.mid);
  const subjects = sent.map((x) => x.subject).sort();
  await until('20 messages labelled Builds (mailkeep search)', async () => {
    const r = await oracle('search', { query: 'label:Builds in:anywhere' });
    return r.total === 20;
  }, { timeout: 30000, interval: 300 });
  // the label's view lists all 20, with the label on each row
  await page.evaluate(() => { location.hash = '#inbox'; });
  const link = page.locator('#sidebar a[href="#label%3ABuilds"]');
  await link.waitFor({ state: 'visible' });
  await link.click();
  const rs = await waitRows(page, 'the label view lists 20', (x) => x.length === 20);
  assert.deepEqual(rs.map((x) => x.subject).sort(), subjects);
  for (const x of rs) assert.deepEqual(x.labels, ['Builds'], `row ${x.subject}`);
  assert.equal((await page.textContent('#range')).trim(), '1–20 of 20');
  await shot(page, 'mail-filter-label-view.png');
  // the Inbox: none of them, on its first page nor anywhere in the API's list
  const inboxTotal = (await oracle('search', { query: 'in:inbox' })).total;
  await page.click('#sidebar a[href="#inbox"]');
  await until('the Inbox drawn', async () => (await page.textContent('#range')).trim() === `1–${Math.min(50, inboxTotal)} of ${inboxTotal}`);
  const inbox = await rows(page);
  assert.deepEqual(inbox.filter((x) => subjects.includes(x.subject)).map((x) => x.subject), [], 'filtered mail in the Inbox');
  const all = [];
  for (let position = 0; ; position += 100) {
    const r = await api(page, `threads?mailbox=inbox&position=${position}&limit=100`);
    assert.equal(r.status, 200, r.text);
    all.push(...r.json.threads);
    if (!r.json.threads.length || all.length >= r.json.total) break;
  }
  assert.deepEqual(all.filter((x) => subjects.includes(x.subject)).map((x) => x.subject), [], 'filtered mail in the API\'s Inbox');
  // IMAP: each is one copy, in Archive (not INBOX), with no flag: the label is mailkeep's own
  // (index-only, labels.db; README "Search the archive"), so IMAP has no keyword or folder for it
  const st = await oracle('imap_state', { mids });
  for (const mid of mids) assert.deepEqual(st[mid], [['Archive']], `<${mid}> over IMAP`);
  // ... and the index has the label on every message (the CLI's view of it)
  const cliConv = await oracle('search', { query: 'label:Builds in:anywhere' });
  assert.deepEqual(cliConv.conversations.map((c) => c.subject).sort(), subjects);
  for (const c of cliConv.conversations) {
    assert.deepEqual([c.labels, c.folders], [['Builds'], ['Archive']], `mailkeep search: ${JSON.stringify(c)}`);
  }
  const inInbox = await oracle('search', { query: 'label:Builds in:inbox' });
  assert.equal(inInbox.total, 0, 'mailkeep search label:Builds in:inbox');
  noErrors(watch);
  await context.close();
});

check('focus is visible; at 375 px the list is one column and usable', async () => {
  const { context, page, watch } = await newPage();
  await page.goto(PAGE);
  await page.locator('#login').waitFor({ state: 'visible' });
  const outline = () => page.evaluate(() => {
    const e = document.activeElement;
    const s = getComputedStyle(e);
    return { tag: e.tagName, id: e.id, text: (e.textContent || '').trim().slice(0, 20), style: s.outlineStyle, width: s.outlineWidth };
  });
  const checkTabs = async (n) => {
    const seen = [];
    for (let k = 0; k < n; k++) {
      await page.keyboard.press('Tab');
      const o = await outline();
      seen.push(o);
      assert.notEqual(o.tag, 'BODY', `Tab ${k + 1} focused nothing`);
      assert.ok(o.style !== 'none' && parseFloat(o.width) > 0, `Tab ${k + 1}: ${JSON.stringify(o)} has no visible outline`);
    }
    return seen;
  };
  await page.evaluate(() => document.activeElement.blur());
  await checkTabs(2);                                  // from the address (focused at load): password, the button
  await login(page);
  await page.evaluate(() => document.activeElement.blur());
  const seen = await checkTabs(8);
  assert.ok(seen.some((o) => o.id === 'search'), `Tab never reached the search field: ${JSON.stringify(seen)}`);
  noErrors(watch);
  await context.close();

  // a phone: 375 px wide
  const phone = await appPage({ viewport: { width: 375, height: 740 }, deviceScaleFactor: 2, hasTouch: true });
  const p = phone.page;
  const layout = await p.evaluate(() => {
    const box = (e) => { const r = e.getBoundingClientRect(); return { x: r.x, y: r.y, w: r.width, h: r.height, bottom: r.bottom, right: r.right }; };
    return {
      scrollWidth: document.documentElement.scrollWidth,
      sidebar: box(document.getElementById('sidebar')),
      main: box(document.getElementById('main')),
      rows: [...document.querySelectorAll('#list li')].slice(0, 10).map((li) => ({ li: box(li), line: box(li.querySelector('.line')), date: box(li.querySelector('.date')) })),
    };
  });
  assert.ok(layout.scrollWidth <= 375, `the page scrolls sideways: scrollWidth ${layout.scrollWidth}`);
  assert.ok(layout.main.x < 1 && layout.main.w >= 370, `main is not the full width: ${JSON.stringify(layout.main)}`);
  assert.ok(layout.sidebar.bottom <= layout.main.y + 1, `the sidebar is beside the list, not above it: ${JSON.stringify(layout)}`);
  let prevBottom = -Infinity;
  for (const r of layout.rows) {
    assert.ok(Math.abs(r.li.x - layout.main.x) < 1 && r.li.w >= 370, `a row is not full width: ${JSON.stringify(r.li)}`);
    assert.ok(r.li.y >= prevBottom - 1, 'rows overlap or sit side by side');
    prevBottom = r.li.bottom;
    assert.ok(r.line.w > 150 && r.line.right <= 375, `the subject line is squeezed or cut off: ${JSON.stringify(r.line)}`);
    assert.ok(r.date.right <= 375, `the date is off screen: ${JSON.stringify(r.date)}`);
  }
  await shot(p, 'mail-phone-inbox.png');
  // usable: tap a row, read, go back with the toolbar's ←
  await p.tap('#list li >> text=Shop newsletter 2');
  await p.locator('#conversation').waitFor({ state: 'visible' });
  assert.equal((await p.textContent('#conversation h2')).trim(), 'Shop newsletter 2');
  const conv = await p.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, h2: document.querySelector('#conversation h2').getBoundingClientRect().right }));
  assert.ok(conv.scrollWidth <= 375 && conv.h2 <= 375, `the conversation does not fit: ${JSON.stringify(conv)}`);
  await shot(p, 'mail-phone-conversation.png');
  await p.tap('#toolbar button[data-action=back]');
  await p.locator('#list').waitFor({ state: 'visible' });
  noErrors(phone.watch);
  await phone.context.close();
});

check('200 % zoom (640x400 CSS px): the Inbox and a conversation do not scroll sideways; subjects are visible', async () => {
  // a 1280x800 window at 200 %: 640x400 CSS pixels, two device pixels to each
  const { context, page, watch } = await appPage({ viewport: { width: 640, height: 400 }, deviceScaleFactor: 2 });
  const fit = () => page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth,
    dpr: window.devicePixelRatio, innerWidth: window.innerWidth }));
  await shot(page, 'mail-zoom200-inbox.png');
  let f = await fit();
  assert.deepEqual([f.dpr, f.innerWidth], [2, 640]);
  assert.ok(f.scrollWidth <= f.clientWidth, `the Inbox scrolls sideways: ${JSON.stringify(f)}`);
  // each row's subject, scrolled into view: it has room, lies inside the row and the screen, is not
  // clipped away by its line, and is what is drawn at its place
  const subjects = await page.evaluate(() => {
    const vw = document.documentElement.clientWidth;
    return [...document.querySelectorAll('#list li')].map((li) => {
      li.scrollIntoView({ block: 'center' });
      const s = li.querySelector('.subject');
      const r = s.getBoundingClientRect();
      const line = li.querySelector('.line').getBoundingClientRect();
      const row = li.getBoundingClientRect();
      const first = s.getClientRects()[0] || r;   // a wrapped subject: its first line
      const hit = document.elementFromPoint(first.left + Math.min(4, first.width / 2), first.top + first.height / 2);
      return { text: s.textContent, w: r.width, h: r.height, left: r.left, top: r.top, bottom: r.bottom,
        visible: Math.min(r.right, line.right, vw) - Math.max(r.left, line.left, 0), rowRight: row.right,
        drawn: !!hit && s.contains(hit), style: getComputedStyle(s).visibility, fontPx: parseFloat(getComputedStyle(s).fontSize) };
    });
  });
  await page.evaluate(() => window.scrollTo(0, 0));
  assert.ok(subjects.length >= 10, `${subjects.length} rows`);
  for (const x of subjects) {
    const ok = x.w > 0 && x.h > 0 && x.left >= 0 && x.top >= 0 && x.bottom <= 400 && x.rowRight <= f.clientWidth + 0.5
      && x.style === 'visible' && x.visible >= Math.min(x.w, 40) && x.drawn && x.fontPx >= 12;
    assert.ok(ok, `the subject ${JSON.stringify(x.text)} is not readable at 200 %: ${JSON.stringify(x)}`);
  }
  // a conversation with an attachment
  const m = msg('single14');
  const t = await threadOf(page, m.mid);
  await openByHash(page, 'inbox', t.id);
  assert.equal((await page.textContent('#conversation h2')).trim(), m.subject);
  await page.locator('#conversation .attachments a').waitFor();
  await shot(page, 'mail-zoom200-conversation.png');
  f = await fit();
  assert.ok(f.scrollWidth <= f.clientWidth, `the conversation scrolls sideways: ${JSON.stringify(f)}`);
  const parts = await page.evaluate(() => ['#conversation h2', '#conversation .message .who', '#conversation .message .body pre',
    '#conversation .attachments a', '#toolbar'].map((sel) => {
    const r = document.querySelector(sel).getBoundingClientRect();
    return { sel, left: r.left, right: r.right, w: r.width, h: r.height };
  }));
  for (const x of parts) assert.ok(x.w > 0 && x.h > 0 && x.left >= 0 && x.right <= f.clientWidth + 0.5, `${x.sel} is cut off: ${JSON.stringify(x)}`);
  assert.ok((await page.textContent('#conversation')).includes('Single message 14 with a photo.'));
  noErrors(watch);
  await context.close();
});

check('toolbar: ←, Label and Move work without an uncaught exception', async () => {
  const { context, page, watch } = await appPage();
  const t = await threadOf(page, msg('single09').mid);
  await openByHash(page, 'inbox', t.id);
  await page.click('#toolbar button[data-action=back]');
  await page.locator('#list').waitFor({ state: 'visible' });
  await page.click(`#list li[data-id="${t.id}"]`);
  await page.locator('#conversation').waitFor({ state: 'visible' });
  for (const action of ['label', 'move']) {
    await page.click(`#toolbar button[data-action=${action}]`);
    await page.locator('#picker').waitFor({ state: 'visible' });
    await page.click('#picker-cancel');
    await page.locator('#picker').waitFor({ state: 'hidden' });
  }
  await page.waitForTimeout(200);
  assert.deepEqual(watch.errors, [], 'uncaught exceptions from toolbar buttons');
  await context.close();
});

check('labels with a slash (nested, as Gmail names them) can be opened', async () => {
  const { context, page, watch } = await appPage();
  const t = await threadOf(page, msg('single11').mid);
  await openByHash(page, 'inbox', t.id);
  await key(page, 'l');
  await page.locator('#picker').waitFor({ state: 'visible' });
  await page.keyboard.type('Work/2026');
  await page.keyboard.press('Enter');
  const link = page.locator('#sidebar a', { hasText: 'Work/2026' });
  await link.waitFor({ state: 'visible' });
  const byApi = await api(page, 'threads?mailbox=' + encodeURIComponent('label:Work/2026'));
  assert.deepEqual(byApi.json.threads.map((x) => x.id), [t.id], 'the API does not list the label');
  await link.click();
  await page.waitForTimeout(800);
  const r = await rows(page);
  const status = (await page.textContent('#status')) || '';
  const shown = { listVisible: await page.isVisible('#list'), rows: r.map((x) => x.subject), error: /no such/i.test(status) };
  assert.deepEqual(shown, { listVisible: true, rows: [msg('single11').subject], error: false },
    'the label view of "Work/2026" (route() takes the part after "/" for a conversation id)');
  await context.close();
});

check('reload keeps a conversation opened from a search', async () => {
  const { context, page } = await appPage();
  const q = 'subject:invoice';
  const t = await threadOf(page, msg('invoice1').mid);
  await key(page, '/');
  await page.keyboard.type(q);
  await page.keyboard.press('Enter');
  await waitRows(page, 'the search result', (rs) => rs.length === 1 && rs[0].id === t.id);
  await key(page, 'o');
  await page.locator('#conversation').waitFor({ state: 'visible' });
  const hash = await page.evaluate(() => decodeURIComponent(location.hash));
  await page.reload();
  await page.locator('#login').waitFor({ state: 'hidden' });
  await page.waitForTimeout(1000);
  const after = {
    conversationOpen: await page.isVisible('#conversation'),
    h2: await page.isVisible('#conversation') ? (await page.textContent('#conversation h2')).trim() : null,
    search: await page.inputValue('#search'),
  };
  assert.deepEqual(after, { conversationOpen: true, h2: 'Your invoice 4711', search: q },
    `after a reload of ${hash} (route() reads everything after "search/" as the query)`);
  await context.close();
});
