// Browser tests for mailkeep's alias page and bookmarklet (node:test + playwright-core + Debian chromium).
//
// Normally run by tests/e2e/test_alias_browser.py, which starts mailkeep, the third-party pages and
// the capture upstream, passes their URLs in the environment, and afterwards sends mail to the
// aliases this script wrote to $OUT_DIR/results.json. Environment:
//   MAILKEEP_URL          mailkeep's page, create_interval = 0        (required)
//   MAILKEEP_LIMITED_URL  another mailkeep, create_interval = 30      (required)
//   THIRD_PARTY_URL       http page with <input type=email id=signup> on another origin (required)
//   THIRD_PARTY_HTTPS_URL the same page over https, self-signed (optional; skipped if unset)
//   ALIAS_TARGET          target address to put in the form          (default someone@example.org)
//   ALIAS_DOMAIN          expected alias domain                      (default alias.localhost)
//   OUT_DIR               screenshots and results.json               (default ./out)
//   CHROMIUM              browser binary                             (default /usr/bin/chromium)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const MAILKEEP_URL = env.MAILKEEP_URL;
const LIMITED_URL = env.MAILKEEP_LIMITED_URL;
const THIRD_PARTY_URL = env.THIRD_PARTY_URL;
const HTTPS_URL = env.THIRD_PARTY_HTTPS_URL || '';
const TARGET = env.ALIAS_TARGET || 'someone@example.org';
const DOMAIN = env.ALIAS_DOMAIN || 'alias.localhost';
const OUT_DIR = env.OUT_DIR || path.join(path.dirname(new URL(import.meta.url).pathname), 'out');
const ALIAS_RE = new RegExp('^[23456789abcdefghjkmnpqrstuvwxyz]{14}@' + DOMAIN.replace(/\./g, '\\.') + '$');

for (const [k, v] of Object.entries({ MAILKEEP_URL, MAILKEEP_LIMITED_URL: LIMITED_URL, THIRD_PARTY_URL })) {
  if (!v) { console.error(`${k} is not set (run through tests/e2e/test_alias_browser.py)`); process.exit(2); }
}

const results = {};
let context, userDataDir;
const pageErrors = [];   // uncaught exceptions and console errors on every page

before(async () => {
  mkdirSync(OUT_DIR, { recursive: true });
  userDataDir = mkdtempSync(path.join(tmpdir(), 'mailkeep-chromium-'));
  // launchPersistentContext: the fresh --user-data-dir is ours, and is removed at the end.
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--ignore-certificate-errors'],
    ignoreHTTPSErrors: true,
    viewport: { width: 1000, height: 900 },
    timeout: 60000,
  });
  context.on('page', watch);
});

after(async () => {
  writeFileSync(path.join(OUT_DIR, 'results.json'), JSON.stringify(results, null, 2));
  if (context) await context.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

const badResponses = [];  // every HTTP response >= 400 the browser got: "STATUS URL"
function watch(page) {
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: pageerror: ${e.message}`));
  page.on('console', (m) => {
    // "Failed to load resource" duplicates a bad response, which is tracked (with its URL) below
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      pageErrors.push(`${page.url()}: console: ${m.text()}`);
    }
  });
  page.on('response', (r) => { if (r.status() >= 400) badResponses.push(`${r.status()} ${r.url()}`); });
}

// Bad responses from `origin`, apart from the favicon (mailkeep's page has none: reported, not fatal).
function badFrom(origin) {
  const list = badResponses.filter((r) => r.split(' ')[1].startsWith(origin));
  const favicon = list.filter((r) => r.endsWith('/favicon.ico'));
  if (favicon.length) console.log(`NOTE: ${favicon[0]} (no favicon; the browser logs a console error on every visit)`);
  return list.filter((r) => !r.endsWith('/favicon.ico'));
}

async function newPage() {
  const page = await context.newPage();
  return page;
}

function errorsFor(prefix) {
  return pageErrors.filter((e) => e.startsWith(prefix));
}

// Fills mailkeep's form and returns the bookmarklet's href as the browser serialises it.
async function bookmarkletFrom(mailkeepUrl, { days = '3', uses = '2' } = {}) {
  const page = await newPage();
  await page.goto(mailkeepUrl + '/');
  await page.fill('#target', TARGET);
  await page.fill('#days', days);
  await page.fill('#uses', uses);
  const href = await page.$eval('a#bookmarklet', (a) => a.href);
  const text = await page.$eval('a#bookmarklet', (a) => a.textContent);
  await page.close();
  assert.ok(href.startsWith('javascript:'), `bookmarklet href is not a javascript: URL: ${href.slice(0, 80)}`);
  assert.ok(text.includes(TARGET), `bookmarklet link text does not name the target: ${text}`);
  return href;
}

// What a browser does with a javascript: URL: strip the scheme, percent-decode, run as a script.
function codeOf(href) {
  return decodeURIComponent(href.slice('javascript:'.length));
}

async function runBookmarkletCode(page, href) {
  await page.addScriptTag({ content: codeOf(href) });
}

// The real mechanism: a link with the javascript: URL, clicked (the browser decodes and runs it).
async function clickBookmarkletLink(page, href) {
  await page.evaluate((h) => {
    const a = document.createElement('a');
    a.id = '__test_bookmarklet'; a.href = h; a.textContent = 'bookmarklet';
    document.body.prepend(a);
  }, href);
  await page.click('#__test_bookmarklet');
  await page.evaluate(() => document.getElementById('__test_bookmarklet').remove());
}

async function expectBanner(page) {
  const banner = page.locator('div[role=status]', { hasText: 'mailkeep' });
  await banner.waitFor({ state: 'visible', timeout: 5000 });
  return banner;
}

async function fillViaBookmarklet(page, run, bannerShot = null) {
  await run();
  const banner = await expectBanner(page);
  if (bannerShot) await page.screenshot({ path: path.join(OUT_DIR, bannerShot) });
  // a click elsewhere (not an input) is not taken: the banner stays, nothing is filled
  await page.click('h1');
  assert.ok(await banner.isVisible(), 'banner gone after a click on a heading');
  await page.click('#signup');
  await page.waitForFunction(() => document.getElementById('signup').value.includes('@'), null, { timeout: 10000 });
  await banner.waitFor({ state: 'detached', timeout: 5000 });
  const value = await page.inputValue('#signup');
  assert.match(value, ALIAS_RE);
  const events = await page.evaluate(() => window.seenEvents);
  assert.ok(events.includes('input:' + value), `no input event with the alias: ${JSON.stringify(events)}`);
  assert.ok(events.includes('change:' + value), `no change event with the alias: ${JSON.stringify(events)}`);
  return value;
}

test('the page creates an alias; copy works', async () => {
  const page = await newPage();
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: MAILKEEP_URL });
  await page.goto(MAILKEEP_URL + '/');
  assert.equal(await page.title(), 'mailkeep — temporary e-mail aliases');
  assert.ok(await page.isHidden('#result'), '#result visible before anything was created');

  // an invalid address is refused in the page, nothing is sent
  await page.fill('#target', 'not an address');
  await page.click('#submit');
  await page.locator('#error').waitFor({ state: 'visible' });
  assert.ok((await page.textContent('#error')).length > 0);
  assert.ok(await page.isHidden('#result'));

  await page.fill('#target', TARGET);
  await page.fill('#days', '5');
  await page.fill('#uses', '3');
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/v1/aliases') && r.request().method() === 'POST'),
    page.click('#submit'),
  ]);
  assert.equal(response.status(), 201);
  const sent = JSON.parse(response.request().postData());
  assert.deepEqual(sent, { target: TARGET, days: 5, max_usage: 3 });
  await page.locator('#result').waitFor({ state: 'visible' });
  const alias = (await page.textContent('#alias')).trim();
  assert.match(alias, ALIAS_RE);
  assert.ok(await page.isHidden('#error'), 'error box still shown after success');
  const token = (await page.textContent('#token')).trim();
  assert.match(token, /^[0-9a-f]{64}$/);
  assert.equal((await page.textContent('#aid')).trim(), alias.split('@')[0]);
  assert.ok((await page.textContent('#details')).includes(TARGET));

  // the token shown manages the alias
  const check = await page.evaluate(async ([aid, t]) => {
    const r = await fetch('/api/v1/aliases/' + aid, { headers: { Authorization: 'Bearer ' + t } });
    return { status: r.status, body: await r.json() };
  }, [alias.split('@')[0], token]);
  assert.equal(check.status, 200);
  assert.equal(check.body.max_usage, 3);

  await page.click('#copy');
  await page.waitForFunction(() => document.getElementById('copy').textContent === 'Copied', null, { timeout: 3000 });
  const clip = await page.evaluate(() => navigator.clipboard.readText().catch((e) => 'ERR ' + e.message));
  assert.equal(clip, alias, 'clipboard does not hold the alias');
  await page.screenshot({ path: path.join(OUT_DIR, 'page-created.png'), fullPage: true });

  // settings are remembered for the next visit (and baked into the bookmarklet)
  await page.reload();
  assert.equal(await page.inputValue('#target'), TARGET);
  const href = await page.$eval('a#bookmarklet', (a) => a.href);
  assert.ok(codeOf(href).includes(JSON.stringify(TARGET)), 'bookmarklet does not carry the target');
  assert.ok(codeOf(href).includes(JSON.stringify(new URL(MAILKEEP_URL).origin)), 'bookmarklet does not carry the origin');

  assert.deepEqual(errorsFor(MAILKEEP_URL), []);
  assert.deepEqual(badFrom(MAILKEEP_URL), []);
  results.page = { alias, token, max_usage: 3 };
  await page.close();
});

test('bookmarklet on a third-party http page fills the e-mail field', async () => {
  const href = await bookmarkletFrom(MAILKEEP_URL, { days: '3', uses: '2' });
  const page = await newPage();
  await page.goto(THIRD_PARTY_URL);
  assert.notEqual(new URL(THIRD_PARTY_URL).origin, new URL(MAILKEEP_URL).origin);
  const alias = await fillViaBookmarklet(page, () => runBookmarkletCode(page, href), 'third-party-banner.png');
  await page.screenshot({ path: path.join(OUT_DIR, 'third-party-filled.png') });
  assert.deepEqual(errorsFor(THIRD_PARTY_URL), []);
  assert.deepEqual(badFrom(new URL(THIRD_PARTY_URL).origin), []);
  results.bookmarklet = { alias, max_usage: 2, days: 3 };

  // Esc cancels: nothing is created, the field is left alone
  await runBookmarkletCode(page, href);
  const banner = await expectBanner(page);
  await page.keyboard.press('Escape');
  await banner.waitFor({ state: 'detached', timeout: 3000 });
  await page.click('#signup');
  await page.waitForTimeout(300);
  assert.equal(await page.inputValue('#signup'), alias);
  await page.close();
});

test('bookmarklet as a real javascript: link', async () => {
  const href = await bookmarkletFrom(MAILKEEP_URL, { days: '1', uses: '' });
  const page = await newPage();
  await page.goto(THIRD_PARTY_URL);
  const alias = await fillViaBookmarklet(page, () => clickBookmarkletLink(page, href));
  results.link = { alias, max_usage: null };
  assert.deepEqual(errorsFor(THIRD_PARTY_URL), []);
  await page.close();
});

test('bookmarklet on a third-party https page', { skip: HTTPS_URL ? false : 'THIRD_PARTY_HTTPS_URL not set' }, async () => {
  const href = await bookmarkletFrom(MAILKEEP_URL, { days: '2', uses: '1' });
  const page = await newPage();
  await page.goto(HTTPS_URL);
  assert.equal(new URL(page.url()).protocol, 'https:');
  assert.ok(await page.evaluate(() => window.isSecureContext));
  const alias = await fillViaBookmarklet(page, () => runBookmarkletCode(page, href));
  await page.screenshot({ path: path.join(OUT_DIR, 'third-party-https-filled.png') });
  assert.deepEqual(errorsFor(HTTPS_URL), []);
  results.https = { alias, max_usage: 1 };
  await page.close();
});

test('rate limit: a second bookmarklet use shows the error box', async () => {
  const href = await bookmarkletFrom(LIMITED_URL, { days: '3', uses: '2' });
  const page = await newPage();
  await page.goto(THIRD_PARTY_URL);
  const first = await fillViaBookmarklet(page, () => runBookmarkletCode(page, href));
  results.limited = { alias: first, max_usage: 2 };

  await page.fill('#signup', '');
  await page.evaluate(() => { window.seenEvents = []; });
  await runBookmarkletCode(page, href);
  await expectBanner(page);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().startsWith(LIMITED_URL) && r.request().method() === 'POST'),
    page.click('#signup'),
  ]);
  assert.equal(response.status(), 429);
  const box = page.locator('div.__mailkeep_error[role=alert]');
  await box.waitFor({ state: 'visible', timeout: 5000 });
  const text = await box.textContent();
  assert.match(text, /^mailkeep: too many aliases; try again in \d+ s$/, `error box text: ${text}`);
  const seconds = Number(text.match(/(\d+) s$/)[1]);
  assert.ok(seconds >= 1 && seconds <= 30, `Retry-After out of range: ${seconds}`);
  assert.equal(await page.inputValue('#signup'), '', 'the field was filled despite the error');
  assert.deepEqual(await page.evaluate(() => window.seenEvents), []);
  // the box sits under the input
  const [ib, bb] = [await page.locator('#signup').boundingBox(), await box.boundingBox()];
  assert.ok(bb.y >= ib.y + ib.height - 1 && bb.y < ib.y + ib.height + 40, `box at ${JSON.stringify(bb)}, input ${JSON.stringify(ib)}`);
  await page.screenshot({ path: path.join(OUT_DIR, 'third-party-rate-limited.png') });
  await page.close();
});

test('bookmarklet reports an unreachable server', async () => {
  // a bookmarklet built for a mailkeep that is gone: the fetch fails, the box says so
  const href = await bookmarkletFrom(MAILKEEP_URL, { days: '3', uses: '2' });
  const dead = new URL(MAILKEEP_URL);
  dead.port = String(Number(env.DEAD_PORT || 9));
  const code = codeOf(href).replace(JSON.stringify(new URL(MAILKEEP_URL).origin), JSON.stringify(dead.origin));
  const page = await newPage();
  await page.goto(THIRD_PARTY_URL);
  await page.addScriptTag({ content: code });
  await expectBanner(page);
  await page.click('#signup');
  const box = page.locator('div.__mailkeep_error[role=alert]');
  await box.waitFor({ state: 'visible', timeout: 10000 });
  assert.match(await box.textContent(), /^mailkeep: cannot reach /);
  assert.equal(await page.inputValue('#signup'), '');
  await page.close();
});
