// Browser tests for the operator's /spam history page (node:test + playwright-core + Debian chromium).
//
// Run by tests/e2e/test_spam_history.py, which starts mailkeep with a trained model, sends one spam
// and one ham message through it, and passes in the environment:
//   MAILKEEP_URL     the HTTP listener                        (required)
//   ADMIN_TOKEN      [http] admin_token                       (required)
//   SPAM_SIGNATURE   signature of a message scored spam       (required)
//   HAM_SIGNATURE    signature of a message scored ham        (required)
//   UNSURE_SIGNATURE signature of a message scored unsure     (required)
//   OUT_DIR          screenshots                              (default ./out)
//   CHROMIUM         browser binary                           (default /usr/bin/chromium)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const URL = env.MAILKEEP_URL;
const OUT_DIR = env.OUT_DIR || path.join(path.dirname(new URL(import.meta.url).pathname), 'out');
for (const k of ['MAILKEEP_URL', 'ADMIN_TOKEN', 'SPAM_SIGNATURE', 'HAM_SIGNATURE', 'UNSURE_SIGNATURE']) {
  if (!env[k]) { console.error(`${k} is not set (run through tests/e2e/test_spam_history.py)`); process.exit(2); }
}

let browser;
const pageErrors = [];

before(async () => {
  mkdirSync(OUT_DIR, { recursive: true });
  browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
    timeout: 60000,
  });
});

after(async () => {
  if (browser) await browser.close();
});

async function operatorPage() {
  const context = await browser.newContext({ httpCredentials: { username: 'operator', password: env.ADMIN_TOKEN } });
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // Failed loads are checked by URL (the browser's own /favicon.ico probe may 404).
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(m.text()); });
  page.on('response', (r) => { if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) pageErrors.push(`${r.status()} ${r.url()}`); });
  return { context, page };
}

test('without the token the page is refused', async () => {
  // Headless Chromium cannot show the login prompt: a navigation without credentials ends in
  // ERR_INVALID_AUTH_CREDENTIALS, and the context's own HTTP client shows the 401 itself.
  const context = await browser.newContext();
  const page = await context.newPage();
  await assert.rejects(page.goto(`${URL}/spam`), /ERR_INVALID_AUTH_CREDENTIALS/);
  const response = await context.request.get(`${URL}/spam`);
  assert.equal(response.status(), 401);
  assert.match(response.headers()['www-authenticate'] || '', /Basic/);
  assert.equal((await response.json()).error, 'unauthorized');
  await context.close();
});

function rgb(text) { return text.match(/\d+/g).slice(0, 3).map(Number); }

test('the history lists verdicts in three colours, with counts', async () => {
  const { context, page } = await operatorPage();
  const response = await page.goto(`${URL}/spam`);
  assert.equal(response.status(), 200);
  const spamRow = page.locator(`tr[data-signature="${env.SPAM_SIGNATURE}"]`);
  const hamRow = page.locator(`tr[data-signature="${env.HAM_SIGNATURE}"]`);
  const unsureRow = page.locator(`tr[data-signature="${env.UNSURE_SIGNATURE}"]`);
  await spamRow.waitFor();
  assert.equal(await spamRow.getAttribute('class'), 'spam');
  assert.equal(await hamRow.getAttribute('class'), 'ham');
  assert.equal(await unsureRow.getAttribute('class'), 'unsure');
  const background = async (row) => rgb(await row.locator('td').first().evaluate((td) => getComputedStyle(td).backgroundColor));
  const [r, g, b] = await background(spamRow);
  assert.ok(r > 200 && r > g + 20 && r > b + 20, `spam row is red, got rgb(${r},${g},${b})`);
  const [ur, ug, ub] = await background(unsureRow);
  assert.ok(ur > 200 && ug > 200 && ub < ug - 20, `unsure row is yellow, got rgb(${ur},${ug},${ub})`);
  const [hr, hg, hb] = await background(hamRow);
  assert.ok(hg > hr && hg > hb, `ham row is green, got rgb(${hr},${hg},${hb})`);
  assert.equal(await page.locator('#count-spam').textContent(), '1');
  assert.equal(await page.locator('#count-unsure').textContent(), '1');
  assert.equal(await page.locator('#count-ham').textContent(), '1');
  assert.equal(await spamRow.locator('.verdict').textContent(), 'spam');
  assert.equal(await unsureRow.locator('.verdict').textContent(), 'unsure');
  // Spam offers "Not spam", ham "Spam", unsure both.
  assert.deepEqual(await spamRow.locator('button.reclassify').allTextContents(), ['Not spam']);
  assert.deepEqual(await hamRow.locator('button.reclassify').allTextContents(), ['Spam']);
  assert.deepEqual(await unsureRow.locator('button.reclassify').allTextContents(), ['Spam', 'Not spam']);
  await page.screenshot({ path: path.join(OUT_DIR, 'spam-history.png'), fullPage: true });
  await context.close();
});

test('a reclassify click retrains and updates the row', async () => {
  const { context, page } = await operatorPage();
  await page.goto(`${URL}/spam`);
  const spamRow = page.locator(`tr[data-signature="${env.SPAM_SIGNATURE}"]`);
  const button = spamRow.locator('button.reclassify');
  assert.equal(await button.textContent(), 'Not spam');
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/spam/reclassify')),
    button.click(),
  ]);
  assert.equal(response.status(), 200);
  await page.waitForFunction((sig) => document.querySelector(`tr[data-signature="${sig}"]`).className === 'ham',
    env.SPAM_SIGNATURE);
  assert.match(await page.locator('#status').textContent(), /learned as ham/);
  assert.equal(await button.textContent(), 'Spam');
  // Reloaded from the server: the label is stored, and counted as a corrected error.
  await page.reload();
  assert.equal(await spamRow.getAttribute('class'), 'ham');
  assert.equal(await spamRow.locator('.verdict').textContent(), 'ham (reclassified)');
  assert.equal(await page.locator('#count-corrected').textContent(), '1');
  await page.screenshot({ path: path.join(OUT_DIR, 'spam-history-reclassified.png'), fullPage: true });
  await context.close();
});

test('an unsure row learned as spam stays spam, with one button', async () => {
  const { context, page } = await operatorPage();
  await page.goto(`${URL}/spam`);
  const row = page.locator(`tr[data-signature="${env.UNSURE_SIGNATURE}"]`);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/spam/reclassify')),
    row.locator('button.reclassify[data-as="spam"]').click(),
  ]);
  assert.equal(response.status(), 200);
  assert.equal((await response.json()).was, 'unsure');
  await page.waitForFunction((sig) => document.querySelector(`tr[data-signature="${sig}"]`).className === 'spam',
    env.UNSURE_SIGNATURE);
  assert.deepEqual(await row.locator('button.reclassify').allTextContents(), ['Not spam']);
  await page.reload();
  assert.equal(await row.getAttribute('class'), 'spam');
  assert.equal(await row.locator('.verdict').textContent(), 'spam (reclassified)');
  assert.deepEqual(await row.locator('button.reclassify').allTextContents(), ['Not spam']);
  assert.equal(await page.locator('#count-corrected').textContent(), '2');
  assert.equal(await page.locator('#count-unsure').textContent(), '1', 'an unsure verdict is still counted as one');
  await context.close();
  assert.deepEqual(pageErrors, []);
});
