// The web UI in headless Chromium, against a real ironclawd started by
// run.sh (which passes IRONCLAW_URL, IRONCLAW_UI_TOKEN, IRONCLAW_UI_USER).
// The tests run in order on one page, like a person would use it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE = process.env.IRONCLAW_URL;
const TOKEN = process.env.IRONCLAW_UI_TOKEN;
const USER = process.env.IRONCLAW_UI_USER || 'alice';
const OUT = process.env.UI_OUT || path.join(path.dirname(fileURLToPath(import.meta.url)), 'out');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
if (!BASE || !TOKEN) throw new Error('run this through tests/ui/run.sh (IRONCLAW_URL and IRONCLAW_UI_TOKEN unset)');

const T = 30_000; // generous waits: a sandbox is created on the first message
let browser;
let page;
let profile;
const problems = []; // console errors, CSP violations, off-origin requests

before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ironclaw-ui-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1440, height: 900 },
    colorScheme: 'light',
  });
  browser = context;
  page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(T);
  const origin = new URL(BASE).origin;
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('request', (r) => {
    const u = new URL(r.url());
    const same = u.host === new URL(origin).host && /^(https?|wss?):$/.test(u.protocol);
    if (!same && !['blob:', 'data:'].includes(u.protocol)) problems.push(`off-origin request: ${r.url()}`);
  });
});

after(async () => {
  await browser?.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
});

async function shot(name) {
  const file = path.join(OUT, name);
  await page.screenshot({ path: file });
  return file;
}

/** Text of the xterm screen, one string per row. */
async function terminalRows() {
  return page.$$eval('#terminal .xterm-rows > div', (rows) => rows.map((r) => r.textContent.replace(/\u00a0/g, ' ')));
}

test('the page and its assets are served with a strict policy', async () => {
  const res = await fetch(`${BASE}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  const csp = res.headers.get('content-security-policy');
  assert.ok(csp, 'a Content-Security-Policy header');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/, 'no inline or eval script');
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  const html = await res.text();
  const nonce = /meta name="csp-nonce" content="([0-9a-f]{32})"/.exec(html)?.[1];
  assert.ok(nonce && csp.includes(`'nonce-${nonce}'`), 'the page carries the nonce of its policy');

  const js = await fetch(`${BASE}/assets/js/app.js`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  const etag = js.headers.get('etag');
  assert.ok(etag);
  const again = await fetch(`${BASE}/assets/js/app.js`, { headers: { 'if-none-match': etag } });
  assert.equal(again.status, 304);
  assert.match((await fetch(`${BASE}/assets/vendor/xterm.css`)).headers.get('content-type'), /^text\/css/);
  assert.equal((await fetch(`${BASE}/assets/nope.js`)).status, 404);
});

test('a wrong token is refused with a clear message', async () => {
  await page.goto(BASE);
  await page.locator('#token-input').fill('icu_not-a-real-token');
  await page.keyboard.press('Enter');
  await page.locator('#login-error').filter({ hasText: 'not accepted' }).waitFor();
  assert.equal(await page.locator('#app').isHidden(), true);
  await shot('login-error.png');
});

test('logs in with the token', async () => {
  await page.locator('#token-input').fill(TOKEN);
  await page.locator('#login-button').click();
  await page.locator('#app').waitFor({ state: 'visible' });
  await page.locator('#me-name').filter({ hasText: USER }).waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem('ironclaw.token')), TOKEN);
  // The chat socket is up.
  await page.waitForFunction(() => document.querySelector('#conn-status').dataset.kind === 'ok');
});

test('sends a message and sees the answer streamed in', async () => {
  // Count how often the answer's text changes while it arrives.
  await page.evaluate(() => {
    window.__textUpdates = 0;
    new MutationObserver((muts) => {
      if (muts.some((m) => m.target.closest?.('.msg.assistant.streaming') || m.target.parentElement?.closest('.msg.assistant.streaming'))) window.__textUpdates++;
    }).observe(document.querySelector('#messages'), { childList: true, characterData: true, subtree: true });
  });
  await page.locator('#prompt').fill('Say hello');
  await page.locator('#prompt').press('Enter');
  await page.locator('.msg.user .bubble', { hasText: 'Say hello' }).waitFor();
  await page.locator('#stop').waitFor({ state: 'visible' });
  const answer = page.locator('.msg.assistant .text', { hasText: 'I am your IronClaw agent' });
  await answer.waitFor();
  await page.locator('.msg.assistant:not(.streaming) .msg-meta', { hasText: 'tokens' }).first().waitFor();
  assert.ok(await page.evaluate(() => window.__textUpdates) >= 3, 'the answer arrived in several pieces');
  assert.equal(await page.locator('#stop').isHidden(), true, 'Stop is gone after the turn');
  // The new session is in the sidebar, titled by the first message.
  await page.locator('#session-list .session.current', { hasText: 'Say hello' }).waitFor();
});

test('a tool call shows as a card with its name, input and output', async () => {
  await page.evaluate(() => {
    window.__sawRunningTool = false;
    new MutationObserver(() => {
      if (document.querySelector('.tool.running .tool-name')) window.__sawRunningTool = true;
    }).observe(document.querySelector('#messages'), { childList: true, subtree: true, attributes: true });
  });
  await page.locator('#prompt').fill('Run a command for me');
  await page.keyboard.press('Enter');
  const card = page.locator('.msg.assistant details.tool').last();
  await card.waitFor();
  assert.equal(await card.locator('.tool-name').textContent(), 'bash');
  assert.match(await card.locator('.tool-brief').textContent(), /echo hi-from-tool/);
  await page.locator('.msg.assistant details.tool.ok .tool-output', { hasText: 'hi-from-tool' }).waitFor();
  assert.ok(await page.evaluate(() => window.__sawRunningTool), 'the card showed while the tool ran');
  await page.locator('.msg.assistant .text', { hasText: 'The command printed hi-from-tool' }).waitFor();
  await page.locator('.msg.assistant:not(.streaming) .msg-meta').last().waitFor();
  await shot('chat.png');
  // The agent's sandbox now exists and the panel shows it.
  await page.locator('#sandbox-name', { hasText: `agent-${USER}` }).waitFor();
});

test('the terminal runs a command in the sandbox', async () => {
  await page.locator('#tab-terminal').click();
  await page.locator('#terminal .xterm').waitFor();
  await page.waitForFunction(() => document.querySelector('#term-status').dataset.kind === 'ok');
  await page.locator('#terminal').click();
  // Wait for the shell's prompt before typing.
  await page.waitForFunction(() => /[#$]\s*$/.test([...document.querySelectorAll('#terminal .xterm-rows > div')].map((r) => r.textContent.replace(/\u00a0/g, ' ').trimEnd()).filter(Boolean).pop() || ''));
  await page.keyboard.type('echo $((6*7))');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => [...document.querySelectorAll('#terminal .xterm-rows > div')]
    .some((r) => r.textContent.replace(/\u00a0/g, ' ').trim() === '42'));
  await page.keyboard.type('echo from-the-terminal > /root/hello.txt');
  await page.keyboard.press('Enter');
  const rows = await terminalRows();
  assert.ok(rows.some((r) => r.includes('echo $((6*7))')), 'the command was echoed');
  await shot('terminal.png');
});

test('the file browser lists /root and shows a file', async () => {
  await page.locator('#tab-files').click();
  await page.locator('#panel-files').waitFor({ state: 'visible' });
  // Up to / : root/ is listed there.
  await page.locator('#files-crumbs [aria-current]', { hasText: 'root' }).waitFor();
  await page.locator('#files-up').click();
  await page.locator('#files-crumbs [aria-current]', { hasText: '/' }).waitFor();
  await page.locator('#files-list .entry-name', { hasText: /^root\/$/ }).click();
  await page.locator('#files-crumbs [aria-current]', { hasText: 'root' }).waitFor();
  // The file written from the terminal (refresh until the shell has run it).
  const entry = page.locator('#files-list .entry-name', { hasText: /^hello\.txt$/ });
  for (let i = 0; i < 50 && !(await entry.count()); i++) {
    await page.locator('#files-refresh').click();
    await page.waitForTimeout(100);
  }
  await entry.click();
  await page.locator('#file-view-body', { hasText: 'from-the-terminal' }).waitFor();
  const file = await shot('ui.png');
  assert.ok(fs.statSync(file).size > 10_000);
});

test('the tasks tab lists the user\'s scheduled tasks and their runs', async () => {
  // Made through the API (hourly: it does not run during the test, so the
  // mock's script is left for the other tests).
  const status = await page.evaluate(async (token) => (await fetch('/v1/tasks', {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'ui-hourly', prompt: 'check the logs', every: '1h' }),
  })).status, TOKEN);
  assert.equal(status, 201);
  await page.locator('#tab-tasks').click();
  await page.locator('#panel-tasks').waitFor({ state: 'visible' });
  const row = page.locator('#tasks-list .task', { hasText: 'ui-hourly' });
  await row.waitFor();
  assert.match(await row.textContent(), /every 1h/);
  assert.match(await row.textContent(), /not run yet/);
  await row.locator('.task-name').click();
  await page.locator('#task-runs', { hasText: 'No runs yet.' }).waitFor();
  await shot('tasks.png');
  await page.evaluate(async (token) => fetch('/v1/tasks/ui-hourly', {
    method: 'DELETE', headers: { authorization: `Bearer ${token}` } }), TOKEN);
  await page.locator('#tasks-refresh').click();
  await page.locator('#tasks-list', { hasText: 'No scheduled tasks' }).waitFor();
  await page.locator('#tab-files').click();
});

test('Stop cancels a running turn and keeps its partial answer', async () => {
  await page.locator('#prompt').fill('Tell me a long story');
  await page.keyboard.press('Enter');
  const story = page.locator('.msg.assistant.streaming .text', { hasText: 'Once upon a time' });
  await story.waitFor();
  await page.locator('#stop').click();
  await page.locator('.msg.assistant .msg-meta.stopped', { hasText: 'Stopped' }).waitFor();
  await page.locator('#stop').waitFor({ state: 'hidden' });
  assert.equal(await page.locator('#send').isEnabled(), true);
  const partial = await page.locator('.msg.assistant .text', { hasText: 'Once upon a time' }).last().textContent();
  assert.doesNotMatch(partial, /never ended/, 'the answer was cut short');
});

test('a reload signs in again and shows the session history', async () => {
  await page.reload();
  await page.locator('#app').waitFor({ state: 'visible' });
  await page.locator('.msg.user .bubble', { hasText: 'Run a command for me' }).waitFor();
  await page.locator('.msg.assistant .text', { hasText: 'I am your IronClaw agent' }).waitFor();
  const card = page.locator('.msg.assistant details.tool.ok').last();
  await card.waitFor();
  assert.equal(await card.locator('.tool-name').textContent(), 'bash');
  await card.locator('summary').click();
  await card.locator('.tool-output', { hasText: 'hi-from-tool' }).waitFor();
  await page.locator('.msg.assistant .text', { hasText: 'The command printed hi-from-tool' }).waitFor();
});

test('New chat starts an empty session; the old one is a click away', async () => {
  await page.locator('#new-chat').click();
  await page.locator('#chat-empty').waitFor({ state: 'visible' });
  await page.locator('#chat-title', { hasText: 'New chat' }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#session-list .session').length === 2);
  await page.locator('#session-list .session:not(.current) .session-open').click();
  await page.locator('.msg.user .bubble', { hasText: 'Run a command for me' }).waitFor();
  await page.locator('#chat-empty').waitFor({ state: 'hidden' });
  assert.equal(await page.locator('#session-list .session.current').count(), 1);
});

test('signing out forgets the token', async () => {
  await page.locator('#logout').click();
  await page.locator('#login').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => localStorage.getItem('ironclaw.token')), null);
});

test('no console errors, policy violations or off-origin requests', () => {
  assert.deepEqual(problems, []);
});
