// Shared helpers of the web view's browser tests (mail_browser.mjs, mail_hostile.mjs): Chromium,
// login, the page's API from inside the page, and the pytest "oracle" (IMAP through Dovecot,
// `mailkeep search`, the counting server's log). Normally run by tests/e2e/test_mail_browser.py,
// which starts everything and passes MAIL_FIXTURE (a JSON file) in the environment:
//   {url, oracle, beacon, outDir, users: {alice: {user, password}, bob: {...}},
//    messages: [{key, mid, subject}], attacks: [{key, mid, subject, what}]}
import assert from 'node:assert/strict';
import { test as nodeTest, after as nodeAfter } from 'node:test';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

if (!process.env.MAIL_FIXTURE) {
  console.error('MAIL_FIXTURE is not set (run through tests/e2e/test_mail_browser.py)');
  process.exit(2);
}
export const FX = JSON.parse(readFileSync(process.env.MAIL_FIXTURE, 'utf8'));
export const URL_ = FX.url;                 // http://127.0.0.1:PORT
export const PAGE = FX.url + '/mail/';
export const OUT_DIR = FX.outDir;
export const API = '/api/v1/mail/';
mkdirSync(OUT_DIR, { recursive: true });

export function msg(key) {
  const m = FX.messages.find((x) => x.key === key) || FX.attacks.find((x) => x.key === key);
  assert.ok(m, `no fixture message ${key}`);
  return m;
}

// Each test's outcome, written to $MAIL_RESULTS (JSON {name: {status, error, ms}}) when the script
// ends: the pytest side runs a script once and reports every test as its own pytest test.
const results = {};
export function check(name, fn) {
  nodeTest(name, async () => {
    const started = Date.now();
    try {
      await fn();
      results[name] = { status: 'pass', ms: Date.now() - started };
    } catch (e) {
      results[name] = { status: 'fail', ms: Date.now() - started, error: String(e && e.stack ? e.stack : e) };
      throw e;
    }
  });
}
nodeAfter(() => {
  if (process.env.MAIL_RESULTS) writeFileSync(process.env.MAIL_RESULTS, JSON.stringify(results, null, 1));
});

// One browser per script; a fresh context (cookies) per test.
let browser, userDataDir;
export async function launch() {
  userDataDir = mkdtempSync(path.join(tmpdir(), 'mailkeep-chromium-'));
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-features=Translate,MediaRouter'],
    timeout: 60000,
  });
  return browser;
}

export async function close() {
  if (browser) await browser.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
}

// Everything that went wrong on a page: uncaught exceptions, console errors, bad responses, dialogs.
export class Watch {
  constructor(page) {
    this.page = page;
    this.errors = [];
    this.console = [];
    this.bad = [];
    this.dialogs = [];
    page.on('pageerror', (e) => this.errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => this.console.push(`${m.type()}: ${m.text()}`));
    page.on('response', (r) => { if (r.status() >= 400) this.bad.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
    page.on('dialog', async (d) => { this.dialogs.push(`${d.type()}: ${d.message()}`); await d.dismiss().catch(() => {}); });
  }
  // Bad responses other than the expected 401 of the start-up session probe.
  unexpectedBad() {
    return this.bad.filter((b) => !/^401 GET .*\/api\/v1\/mail\/session$/.test(b));
  }
  consoleErrors() {
    // "Failed to load resource" repeats a bad response, which `bad` lists with its URL
    return this.console.filter((c) => c.startsWith('error:') && !c.includes('Failed to load resource'));
  }
}

export async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  return { context, page, watch: new Watch(page) };
}

// A page of the app logged in as alice, in a fresh context holding the cookie of one shared
// session (one Argon2id login per script instead of one per test). Tests that log out use login().
let shared = null;
export async function appPage(options = {}) {
  if (!shared) {
    const { context, page } = await newPage();
    await login(page);
    shared = await context.storageState();
    await context.close();
  }
  const r = await newPage({ ...options, storageState: shared });
  await r.page.goto(PAGE);
  await r.page.locator('#list li').first().waitFor({ state: 'visible' });
  return r;
}

export async function login(page, who = 'alice') {
  const u = FX.users[who];
  await page.goto(PAGE);
  await page.locator('#login').waitFor({ state: 'visible' });
  await page.fill('#username', u.user);
  await page.fill('#password', u.password);
  await page.click('#login-form button[type=submit]');
  await page.locator('#login').waitFor({ state: 'hidden' });
  await page.locator('#list li').first().waitFor({ state: 'visible' });
}

// The page's own API, from inside the page (the cookie is HttpOnly: only the page can use it).
export async function api(page, p, options = {}) {
  return page.evaluate(async ([url, opts]) => {
    const init = { method: opts.method || 'GET', credentials: 'same-origin', headers: {} };
    if (opts.body) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(opts.body); }
    if (opts.csrf) init.headers['X-CSRF-Token'] = opts.csrf;
    const r = await fetch(url, init);
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, json, text };
  }, [API + p, options]);
}

// The conversation id (as the API spells it) of the message with Message-ID mid.
export async function threadOf(page, mid) {
  const r = await api(page, 'threads?q=' + encodeURIComponent(`rfc822msgid:${mid} in:anywhere`));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.threads.length, 1, `rfc822msgid:${mid}: ${r.text.slice(0, 300)}`);
  return r.json.threads[0];
}

export async function conversation(page, threadId) {
  const r = await api(page, 'threads/' + encodeURIComponent(threadId));
  assert.equal(r.status, 200, r.text);
  return r.json;
}

// The pytest side: imap_state {mid} -> [[folder, flags...]], imap_move {mid, from, to},
// search {query} -> the CLI's JSON, beacon {} -> [{method, path, headers}].
export async function oracle(op, args = {}) {
  const r = await fetch(FX.oracle + '/' + op, { method: 'POST', body: JSON.stringify(args) });
  const body = await r.json();
  assert.equal(r.status, 200, `oracle ${op} ${JSON.stringify(args)}: ${JSON.stringify(body)}`);
  return body;
}

// Polls fn until it returns a truthy value (returned) or the time is up (the last value is reported).
export async function until(what, fn, { timeout = 15000, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) assert.fail(`${what}: not true after ${timeout} ms (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

// The rows of the conversation list as the user sees them.
export async function rows(page) {
  return page.$$eval('#list li', (lis) => lis.map((li) => ({
    id: li.dataset.id,
    from: li.querySelector('.from')?.textContent ?? '',
    subject: li.querySelector('.subject')?.textContent ?? '',
    snippet: li.querySelector('.snippet')?.textContent ?? '',
    date: li.querySelector('.date')?.textContent ?? '',
    labels: [...li.querySelectorAll('.label')].map((l) => l.textContent),
    unread: li.classList.contains('unread'),
    cursor: li.classList.contains('cursor'),
    weight: getComputedStyle(li.querySelector('.subject')).fontWeight,
  })));
}

// Waits until the list was redrawn for the current hash and the row predicate holds.
export async function waitRows(page, what, pred, timeout = 15000) {
  return until(what, async () => { const r = await rows(page); return pred(r) ? r : null; }, { timeout });
}

export async function openByHash(page, view, threadId) {
  await page.evaluate(([v, id]) => { location.hash = '#' + encodeURIComponent(v + '/' + id); }, [view, threadId]);
  await page.locator('#conversation').waitFor({ state: 'visible' });
}

// Over IMAP (a kept Dovecot session of the pytest side): {mid: [[folder, flag...], ...]}.
export async function imapState(mids) {
  return oracle('imap_state', { mids });
}

// The IMAP folders of a message's copies, e.g. ['Archive'].
export async function imapFolders(mid) {
  return (await imapState([mid]))[mid].map((c) => c[0]).sort();
}

// The flags of the one copy of each message: {mid: ['\\Flagged', '\\Seen']}.
export async function imapFlagsOf(mids) {
  const st = await imapState(mids);
  const out = {};
  for (const mid of mids) {
    assert.equal(st[mid].length, 1, `<${mid}>: expected one copy over IMAP, got ${JSON.stringify(st[mid])}`);
    out[mid] = st[mid][0].slice(1);
  }
  return out;
}

export async function imapFlags(mid) {
  return (await imapFlagsOf([mid]))[mid];
}

// Polls IMAP until pred(flags) holds for every message.
export async function untilFlags(what, mids, pred, timeout = 10000) {
  let last;
  try {
    return await until(what, async () => {
      last = await imapFlagsOf(mids);
      return mids.every((m) => pred(last[m]));
    }, { timeout, interval: 200 });
  } catch (e) {
    throw new Error(`${e.message}; IMAP flags: ${JSON.stringify(last)}`);
  }
}

export function shot(page, name, options = {}) {
  return page.screenshot({ path: path.join(OUT_DIR, name), ...options });
}

// Keys go to the document, never to an input that happens to have focus.
export async function key(page, k) {
  await page.evaluate(() => { if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur(); });
  await page.keyboard.press(k);
}
