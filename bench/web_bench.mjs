// The browser half of bench/web_bench.py (which starts mailkeep, logs in and passes a JSON config
// file as the only argument): headless Debian Chromium through playwright-core from
// tests/browser/node_modules, launched as tests/browser/mail_lib.mjs does.
//
// Each repetition is a fresh browser context holding the session cookie (logged in, nothing
// cached), one page of /mail/:
//   load    navigation start -> the first Inbox rows drawn
//   jList   `j` in the list, cfg.jList times -> the cursor drawn on the next row
//   open    a click on a row that was not prefetched -> its messages drawn
//   jOpen   `j` in the open conversation, cfg.jOpen times -> the next conversation drawn
//   search  `u`, `/`, the query typed, Enter -> the result rows drawn
// Times are taken inside the page: from the event's timeStamp (keydown, click) or from the
// navigation start, to the paint after the DOM change (a MutationObserver sees the change, then
// requestAnimationFrame + setTimeout(0) waits for that frame). Every API request on the way is
// reported with its server time from Resource Timing (responseStart - requestStart).
// Keys are pressed cfg.pressGapMs apart (a fast typist), so that each press meets a quiet page.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';

const require = createRequire(new URL('../tests/browser/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const PAGE = cfg.url + '/mail/';

// Runs in the page before its own script (every new document of the context).
function instrument() {
  if (window.top !== window) return;
  performance.setResourceTimingBufferSize(100000);
  const B = { event: 0, eventType: '', longTasks: [] };
  window.__bench = B;
  try {   // main-thread tasks over 50 ms: the page's own work, as against waiting for the CPU
    new PerformanceObserver((l) => {
      for (const e of l.getEntries()) B.longTasks.push({ start: e.startTime, duration: e.duration });
    }).observe({ type: 'longtask', buffered: true });
  } catch { /* not supported */ }
  addEventListener('keydown', (e) => { B.event = e.timeStamp; B.eventType = 'keydown ' + e.key; }, true);
  addEventListener('click', (e) => { B.event = e.timeStamp; B.eventType = 'click'; }, true);
  B.visible = (el) => !!el && !el.closest('[hidden]');
  // Resolves once pred() holds, with {seen, painted}: performance.now() when the DOM change was
  // seen and after the frame that shows it.
  B.when = (pred) => new Promise((resolve) => {
    let done = false;
    let obs = null;
    let iv = null;
    const check = () => {
      if (done) return;
      let ok = false;
      try { ok = !!pred(); } catch { ok = false; }
      if (!ok) return;
      done = true;
      if (obs) obs.disconnect();
      clearInterval(iv);
      const seen = performance.now();
      requestAnimationFrame(() => setTimeout(() => resolve({ seen, painted: performance.now() }), 0));
    };
    obs = new MutationObserver(check);
    obs.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
    iv = setInterval(check, 20);
    setTimeout(() => {
      if (done) return;
      done = true;
      obs.disconnect();
      clearInterval(iv);
      resolve({ seen: NaN, painted: NaN, timedOut: true });
    }, 60000);
    check();
  });
  B.loaded = B.when(() => {
    const app = document.getElementById('app');
    const li = document.querySelector('#list li');
    return app && !app.hidden && B.visible(li);
  });
  const $ = (id) => document.getElementById(id);
  B.capture = {
    nextConversation: () => document.querySelector('#conversation h2'),
    searchDrawn: () => document.querySelector('#list li'),
  };
  B.preds = {
    cursorAt: (k) => document.querySelectorAll('#list li')[k]?.classList.contains('cursor'),
    conversationShown: () => !$('conversation').hidden && document.querySelector('#conversation .message'),
    nextConversation: (a, h2Before) => {
      const h = document.querySelector('#conversation h2');
      return h && h !== h2Before && !$('conversation').hidden && document.querySelector('#conversation .message');
    },
    searchDrawn: (a, firstBefore) => {
      if (!location.hash.startsWith('#search')) return false;
      const li = document.querySelector('#list li');
      return li ? li !== firstBefore && B.visible(li) : /^0/.test($('range').textContent);
    },
  };
  // The API requests that started in [from, to], with their server time.
  B.requests = (from, to) => performance.getEntriesByType('resource')
    .filter((e) => e.name.includes('/api/v1/mail/') && e.startTime >= from - 0.5 && e.startTime <= to)
    .map((e) => {
      const u = new URL(e.name);
      return { path: u.pathname + u.search, start: e.startTime, ttfb: e.responseStart - e.requestStart,
        duration: e.duration };
    });
  // Every resource fetched in [from, to]: name, start and end relative to `from`.
  B.waterfall = (from, to) => performance.getEntriesByType('resource')
    .filter((e) => e.startTime >= from - 0.5 && e.startTime <= to)
    .map((e) => {
      const u = new URL(e.name);
      return { path: u.pathname + u.search, start: e.startTime - from, requestStart: e.requestStart - from,
        responseStart: e.responseStart - from, end: e.responseEnd - from };
    });
  // The last request for the conversation `id` (prefetched ones started before `from`).
  B.threadRequest = (id) => {
    const want = '/api/v1/mail/threads/' + encodeURIComponent(id);
    const all = performance.getEntriesByType('resource').filter((e) => new URL(e.name).pathname === want);
    const e = all[all.length - 1];
    return e ? { start: e.startTime, ttfb: e.responseStart - e.requestStart, duration: e.duration } : null;
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Arms B.when(B.preds[name]) in the page, runs `act` (the key press or click), and returns the
// time from the event to the paint. A predicate gets `arg` and what B.capture[name] (if any) saw
// when arming, i.e. what the page showed before the event. (Named functions of the init script:
// the page's CSP allows no eval.)
async function timed(page, name, arg, act) {
  await page.evaluate(([n, a]) => {
    const B = window.__bench;
    const before = B.capture[n] ? B.capture[n]() : null;
    B.pending = B.when(() => B.preds[n](a, before));
  }, [name, arg]);
  await act();
  const t = await page.evaluate(() => window.__bench.pending.then((x) => ({ ...x, event: window.__bench.event,
    eventType: window.__bench.eventType })));
  if (t.timedOut) throw new Error(`${name}(${JSON.stringify(arg)}): not drawn within 60 s`);
  return t;
}

async function key(page, k) {
  await page.evaluate(() => {
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
  });
  await page.keyboard.press(k);
}

const browser = await chromium.launch({
  executablePath: cfg.chromium || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-features=Translate,MediaRouter'],
  timeout: 60000,
});
const out = { reps: [], errors: [], version: browser.version() };
try {
  for (let r = -cfg.warmup; r < cfg.reps; r++) {
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    await context.addCookies([{ name: cfg.cookie.name, value: cfg.cookie.value, url: cfg.url, httpOnly: true,
      sameSite: 'Strict' }]);
    await context.addInitScript(instrument);
    const page = await context.newPage();
    page.setDefaultTimeout(cfg.timeoutMs);
    page.on('pageerror', (e) => out.errors.push(`rep ${r}: pageerror ${e.message}`));
    page.on('response', (res) => {
      if (res.status() >= 400) out.errors.push(`rep ${r}: ${res.status()} ${res.url()}`);
    });
    const rec = { rep: r };

    // ---- load
    await page.goto(PAGE, { waitUntil: 'commit' });
    await page.waitForFunction(() => window.__bench && window.__bench.loaded);
    const loaded = await page.evaluate(() => window.__bench.loaded);
    const rowIds = await page.$$eval('#list li', (l) => l.map((li) => li.dataset.id));
    rec.load = { ms: loaded.painted, seen: loaded.seen, rows: rowIds.length,
      requests: await page.evaluate((to) => window.__bench.requests(0, to), loaded.painted),
      nav: await page.evaluate(() => {
        const n = performance.getEntriesByType('navigation')[0];
        const api = performance.getEntriesByType('resource').find((e) => e.name.includes('/api/v1/mail/'));
        return { responseEnd: n.responseEnd, domContentLoaded: n.domContentLoadedEventEnd,
          appStart: api ? api.startTime : null };
      }),
      waterfall: await page.evaluate((to) => window.__bench.waterfall(0, to), loaded.painted),
      longTasks: await page.evaluate((to) => window.__bench.longTasks.filter((t) => t.start <= to), loaded.painted) };

    // ---- j in the list: rows 1..jList get the cursor (and each press prefetches the row after it)
    rec.jList = [];
    const jl = Math.min(cfg.jList, rowIds.length - 1);
    for (let k = 1; k <= jl; k++) {
      await sleep(cfg.pressGapMs);
      const t = await timed(page, 'cursorAt', k,
        () => key(page, 'j'));
      rec.jList.push({ ms: t.painted - t.event, seenMs: t.seen - t.event });
    }

    // ---- open a row nobody prefetched (the cursor's row + 1 is): rows jl+2 onwards, a new one each time
    const span = Math.max(1, Math.min(10, rowIds.length - jl - 2 - cfg.jOpen));
    const openRow = Math.min(rowIds.length - 1, jl + 2 + ((r + cfg.warmup) % span));
    if (openRow > jl + 1) {
      await sleep(cfg.pressGapMs * 2);
      const id = rowIds[openRow];
      const t = await timed(page, 'conversationShown', null,
        () => page.locator('#list li').nth(openRow).locator('.subject').click());
      const req = await page.evaluate((i) => window.__bench.threadRequest(i), id);
      rec.open = { ms: t.painted - t.event, seenMs: t.seen - t.event, row: openRow, eventType: t.eventType,
        requests: await page.evaluate(([from, to]) => window.__bench.requests(from, to), [t.event, t.painted]),
        prefetched: !!req && req.start < t.event };

      // ---- j in the open conversation: the next rows' conversations
      rec.jOpen = [];
      for (let k = 1; k <= cfg.jOpen && openRow + k < rowIds.length; k++) {
        await sleep(cfg.pressGapMs);
        const next = rowIds[openRow + k];
        const tj = await timed(page, 'nextConversation', null, () => key(page, 'j'));
        const rq = await page.evaluate((i) => window.__bench.threadRequest(i), next);
        const pre = !!rq && rq.start < tj.event;
        rec.jOpen.push({ ms: tj.painted - tj.event, seenMs: tj.seen - tj.event, prefetched: pre,
          server: rq && !pre ? rq.ttfb : null });
      }
    }

    // ---- search: back to the list, `/`, the query, Enter
    const query = cfg.queries[(r + cfg.warmup) % cfg.queries.length];
    await sleep(cfg.pressGapMs);
    await key(page, 'u');
    await page.locator('#list').waitFor({ state: 'visible' });
    await sleep(cfg.pressGapMs);
    await key(page, '/');
    await page.keyboard.type(query);
    await sleep(cfg.pressGapMs);
    const ts = await timed(page, 'searchDrawn', null, () => page.keyboard.press('Enter'));
    rec.search = { query, ms: ts.painted - ts.event, seenMs: ts.seen - ts.event, eventType: ts.eventType,
      rows: await page.$$eval('#list li', (l) => l.length),
      requests: await page.evaluate(([from, to]) => window.__bench.requests(from, to), [ts.event, ts.painted]),
      waterfall: await page.evaluate(([from, to]) => window.__bench.waterfall(from, to), [ts.event, ts.painted]) };

    out.reps.push(rec);
    const open = rec.open ? rec.open.ms.toFixed(0) : '-';
    process.stdout.write(`rep ${r}: load ${rec.load.ms.toFixed(0)} ms, open ${open} ms, ` +
      `search ${rec.search.ms.toFixed(0)} ms (${query}, ${rec.search.rows} rows)\n`);
    await context.close();
  }
} finally {
  await browser.close();
  writeFileSync(cfg.out, JSON.stringify(out));
}
