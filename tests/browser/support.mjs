// Support for the browser tests of the web console (`callout serve`, /console).
//
// startStack() starts `callout demo-backend` and `callout serve` on free loopback ports, in a
// temp directory (actions: a copy of plugins/order-status and a deliberately broken action;
// a fresh data dir; a callout.toml with one admin key), as tests/peers/run-peers.sh does.
// launchBrowser() starts Debian's headless Chromium through playwright-core (no browser
// download). The helpers below fail with the selector, what was expected, what was found and
// the HTML around it, so a failure says whether the console or the test is wrong.
//
// Environment: CALLOUT_BIN (default target/debug/callout), CALLOUT_CHROMIUM (default
// /usr/bin/chromium), CALLOUT_SCREENSHOTS=1 (write the screenshots to docs/console/ instead of
// a temp dir), CALLOUT_BROWSER_KEEP=1 (keep the temp dir and its logs).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, rmSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.resolve(ROOT, process.env.CALLOUT_BIN || 'target/debug/callout');
export const CHROMIUM = process.env.CALLOUT_CHROMIUM || '/usr/bin/chromium';
const ORDER_STATUS = path.join(ROOT, 'plugins/order-status');
const ORDER_STATUS_WASM = path.join(ROOT, 'plugins/target/wasm32-wasip2/release/order_status.wasm');
// The environment variables the plugins' secrets read (host/src/demo/mod.rs TOKEN_VARIABLES).
const TOKEN_VARIABLES = ['ORDERS_API_TOKEN', 'MEMBERSHIP_API_TOKEN', 'CRM_API_TOKEN'];

const hex = (bytes) => randomBytes(bytes).toString('hex');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A free TCP port on 127.0.0.1 (the OS picks it; it is released before use).
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// A TOML basic string (JSON's escapes are valid TOML for these paths and URLs).
const tomlString = (s) => JSON.stringify(s);

// Ctrl-C or a kill of the test process still stops the servers (through the 'exit' hooks).
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => process.exit(128 + os.constants.signals[signal]));
}

// Starts one child process, its stdout and stderr appended to `log`. Killed when Node exits.
function start(name, args, env, log) {
  const out = createWriteStream(log, { flags: 'a' });
  const child = spawn(BIN, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  child.on('error', (e) => out.write(`\n[${name}: ${e.message}]\n`));
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);
  child.exited.then(() => process.off('exit', killOnExit));
  child.label = name;
  child.log = log;
  return child;
}

// Stops a child started by start(): SIGTERM, then SIGKILL after 5 s.
async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const done = await Promise.race([child.exited, sleep(5000).then(() => null)]);
  if (!done) {
    child.kill('SIGKILL');
    await child.exited;
  }
}

export async function tail(file, lines = 40) {
  try {
    return (await readFile(file, 'utf8')).split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// Starts the demo back end and `callout serve` with the console. Returns the stack; call
// stack.stop() when done.
export async function startStack() {
  if (!existsSync(BIN)) throw new Error(`no ${BIN}: build it with cargo build -p callout`);
  if (!existsSync(ORDER_STATUS_WASM)) {
    throw new Error(`no ${ORDER_STATUS_WASM}: build the actions with ./dev plugins`);
  }
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'callout-browser-'));
  const stack = { tmp, children: [] };
  const keep = process.env.CALLOUT_BROWSER_KEEP === '1';
  const removeOnExit = () => {
    for (const c of stack.children) c.kill('SIGKILL');
    try {
      rmSync(tmp, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // a server still writing: leave the temp dir
    }
  };
  if (!keep) process.on('exit', removeOnExit);
  stack.stop = async () => {
    for (const c of stack.children.reverse()) await stop(c);
    if (keep) {
      console.log(`# kept ${tmp} (logs: backend.log, serve.log)`);
    } else {
      process.off('exit', removeOnExit);
      await rm(tmp, { recursive: true, force: true });
    }
  };
  try {
    await startInto(stack);
  } catch (e) {
    await stack.stop();
    throw e;
  }
  return stack;
}

async function startInto(stack) {
  const { tmp } = stack;
  const token = `demo-${hex(16)}`;
  const adminKey = hex(16);
  const env = { ...process.env, CALLOUT_DEMO_TOKEN: token, CALLOUT_ADMIN_KEY: adminKey };
  for (const v of TOKEN_VARIABLES) env[v] = token;
  for (const v of ['CALLOUT_ACTIONS', 'CALLOUT_DATA_DIR', 'CALLOUT_CONFIG', 'CALLOUT_LOG']) delete env[v];

  // The demo back end: port 0, its URL read from its first line (host/src/cli/demo.rs).
  const backendLog = path.join(tmp, 'backend.log');
  const backend = start('demo-backend', ['demo-backend', '--listen', '127.0.0.1:0'], env, backendLog);
  stack.children.push(backend);
  let backendUrl = null;
  for (let i = 0; i < 300 && !backendUrl; i++) {
    const m = /^demo back end listening on (http:\/\/127\.0\.0\.1:\d+)$/m.exec(
      await readFile(backendLog, 'utf8').catch(() => ''),
    );
    if (m) backendUrl = m[1];
    else if (backend.exitCode !== null) break;
    else await sleep(100);
  }
  if (!backendUrl) throw new Error(`the demo back end did not start:\n${await tail(backendLog)}`);

  // Actions: order-status (its component made absolute) and one that cannot load.
  const actions = path.join(tmp, 'actions');
  await mkdir(path.join(actions, 'order-status'), { recursive: true });
  const manifest = await readFile(path.join(ORDER_STATUS, 'action.toml'), 'utf8');
  const absolute = manifest.replace(
    /^component\s*=\s*"([^"]*)"\s*$/m,
    (_, rel) => `component = ${tomlString(path.resolve(ORDER_STATUS, rel))}`,
  );
  if (absolute === manifest) throw new Error('plugins/order-status/action.toml: no component line');
  await writeFile(path.join(actions, 'order-status', 'action.toml'), absolute);
  await copyFile(path.join(ORDER_STATUS, 'tests.toml'), path.join(actions, 'order-status', 'tests.toml'));
  await mkdir(path.join(actions, 'broken-example'));
  await writeFile(
    path.join(actions, 'broken-example', 'action.toml'),
    [
      'name = "broken-example"',
      // The usual layout of a plugin that was never built (its component outside its folder).
      'component = "../target/wasm32-wasip2/release/broken_example.wasm"',
      'description = "An action whose component was never built (the console shows it as failed)"',
      '',
    ].join('\n'),
  );

  const data = path.join(tmp, 'data');
  await mkdir(data);
  const port = await freePort();
  const config = path.join(tmp, 'callout.toml');
  await writeFile(
    config,
    `[server]
watch_interval_ms = 0

[[server.api_keys]]
name = "ops"
scope = "admin"
env = "CALLOUT_ADMIN_KEY"

[pool]
total_component_instances = 16
total_core_instances = 64
total_memories = 16
total_tables = 32

# order-status pointed at the demo back end, as callout demo does (its secret ORDERS_TOKEN
# may only be sent to this base URL).
[actions.order-status.config]
base_url = ${tomlString(backendUrl)}
`,
  );

  const serveLog = path.join(tmp, 'serve.log');
  const origin = `http://127.0.0.1:${port}`;
  const serve = start(
    'serve',
    [
      '--actions',
      actions,
      '--data-dir',
      data,
      '--config',
      config,
      '--dev-loopback',
      backendUrl.replace('http://', ''),
      'serve',
      '--listen',
      `127.0.0.1:${port}`,
    ],
    env,
    serveLog,
  );
  stack.children.push(serve);
  const deadline = Date.now() + 120_000;
  let up = false;
  while (!up && Date.now() < deadline && serve.exitCode === null) {
    try {
      const r = await fetch(`${origin}/healthz`, { signal: AbortSignal.timeout(2000) });
      up = r.status === 200;
    } catch {
      // not listening yet
    }
    if (!up) await sleep(200);
  }
  if (!up) throw new Error(`callout serve did not answer GET /healthz with 200:\n${await tail(serveLog)}`);

  Object.assign(stack, {
    origin,
    port,
    backendUrl,
    backendToken: token,
    adminKey,
    actionsDir: actions,
    dataDir: data,
    serveLog,
    backendLog,
  });
}

// The requests the demo back end received (its control endpoint; needs the token).
export async function backendRequests(stack) {
  const r = await fetch(`${stack.backendUrl}/_demo/requests`, {
    headers: { authorization: `Bearer ${stack.backendToken}` },
  });
  if (!r.ok) throw new Error(`GET ${stack.backendUrl}/_demo/requests: HTTP ${r.status}`);
  return r.json();
}

// ---------------------------------------------------------------------------------------------
// Browser

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// Headless Chromium with a fresh profile (launch() makes a temp user data dir).
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no ${CHROMIUM}: install Debian's chromium (apt-get install chromium)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

// Whether a URL the page requested stays on the console's server (data: and blob: URLs never
// leave the page).
export const isLocal = (origin, url) =>
  url === origin || url.startsWith(`${origin}/`) || /^(data|blob):/.test(url) || url === 'about:blank';

// Runs fn({ context, page, requests }) in a fresh browser context (no cookies), logged in with
// the admin key unless login is false. Every request the pages make is recorded; one that does
// not go to the console's origin is aborted and fails the test. The context is closed after.
export async function withSession(browser, stack, fn, { login: doLogin = true } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(15_000);
  context.setDefaultNavigationTimeout(60_000);
  const requests = [];
  context.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));
  await context.route(
    (url) => !isLocal(stack.origin, url.href),
    (route) => route.abort(),
  );
  const page = await context.newPage();
  const foreign = () => requests.filter((r) => !isLocal(stack.origin, r.slice(r.indexOf(' ') + 1)));
  try {
    if (doLogin) await login(page, stack);
    await fn({ context, page, requests });
  } catch (e) {
    const f = foreign();
    if (f.length) e.message += `\n(and requests that left ${stack.origin}: ${f.join(', ')})`;
    throw e;
  } finally {
    await context.close();
  }
  const f = foreign();
  if (f.length) {
    throw new Error(`no request may leave ${stack.origin}; the pages requested:\n  ${f.join('\n  ')}`);
  }
}

// Logs in through the login form; fails unless it lands on /console.
export async function login(page, stack) {
  await goto(page, stack, '/console/login');
  await page.locator('#key').fill(stack.adminKey);
  await clickAndWait(page, page.getByRole('button', { name: 'Sign in', exact: true }), 'button "Sign in"');
  const p = new URL(page.url()).pathname;
  if (p !== '/console' && p !== '/console/') {
    fail(page, 'login', 'a redirect to /console', page.url(), await excerpt(page));
  }
}

// ---------------------------------------------------------------------------------------------
// Navigation and assertions that say what they saw

export class ContractError extends Error {}

// Throws "<where>: expected <expected>, got <got>" with the page's URL and an HTML excerpt.
export function fail(page, where, expected, got, html) {
  const shown = typeof got === 'string' ? JSON.stringify(got) : String(got);
  throw new ContractError(
    `${where}: expected ${expected}, got ${shown}\n  at ${page.url()}\n  HTML:\n${indent(html)}`,
  );
}

const indent = (s) =>
  (s || '')
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');

// The outer HTML of the selector's first match (else of <main>, else <body>), cut to `max`.
export async function excerpt(page, selector, max = 4000) {
  const html = await page
    .evaluate((sel) => {
      const el = (sel && document.querySelector(sel)) || document.querySelector('main') || document.body;
      return el ? el.outerHTML : '(empty document)';
    }, selector || null)
    .catch((e) => `(could not read the page: ${e.message})`);
  return html.length > max ? `${html.slice(0, max)}… (${html.length} chars)` : html;
}

// Where a failed navigation leaves us: its status and the page's text.
async function checkResponse(page, response, what, maxOk) {
  if (response && response.status() > maxOk) {
    fail(page, what, `an HTTP status <= ${maxOk}`, `HTTP ${response.status()}`, await excerpt(page));
  }
}

// GET a console path; fails on an HTTP error.
export async function goto(page, stack, p) {
  const response = await page.goto(`${stack.origin}${p}`, { waitUntil: 'load' });
  await checkResponse(page, response, `GET ${p}`, 399);
  return response;
}

// Clicks (a form's submit button, usually) and waits for the page it loads. A 4xx page is
// accepted (a form with errors may come back as 400/422); a 5xx fails.
export async function clickAndWait(page, locator, what) {
  const n = await locator.count();
  if (n !== 1) fail(page, what, 'exactly one element', `${n} elements`, await excerpt(page));
  const [response] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), locator.click()]);
  await checkResponse(page, response, what, 499);
  return response;
}

// Clicks the only button called `name` (exact accessible name) and waits for the next page.
export const submit = (page, name) =>
  clickAndWait(page, page.getByRole('button', { name, exact: true }), `button "${name}"`);

// Soft assertions: `await soft(() => expectX(...))` records a failure and goes on;
// soft.check() then throws them all at once (so one run reports every difference).
export function softAssertions() {
  const errors = [];
  const soft = async (fn) => {
    try {
      await fn();
    } catch (e) {
      if (!(e instanceof ContractError)) throw e;
      errors.push(e.message);
    }
  };
  soft.check = () => {
    if (errors.length === 1) throw new ContractError(errors[0]);
    if (errors.length)
      throw new ContractError(
        `${errors.length} failures:\n${errors.map((e, i) => `(${i + 1}) ${e}`).join('\n')}`,
      );
  };
  return soft;
}

// The trimmed text of the selector's first match; fails when there is none.
export async function textOf(page, selector) {
  const loc = page.locator(selector);
  if ((await loc.count()) === 0) fail(page, selector, 'an element', 'none', await excerpt(page));
  return ((await loc.first().textContent()) || '').trim();
}

export async function expectPresent(page, selector, what = 'an element') {
  const n = await page.locator(selector).count();
  if (n === 0) fail(page, selector, what, 'none', await excerpt(page));
  return n;
}

export async function expectCount(page, selector, expected, around) {
  const n = await page.locator(selector).count();
  if (n !== expected) fail(page, selector, `${expected} element(s)`, `${n}`, await excerpt(page, around));
}

export async function expectContains(page, selector, needle, around) {
  const t = await textOf(page, selector);
  const ok = needle instanceof RegExp ? needle.test(t) : t.includes(needle);
  if (!ok)
    fail(
      page,
      selector,
      `text containing ${needle instanceof RegExp ? needle : JSON.stringify(needle)}`,
      t,
      await excerpt(page, around || selector),
    );
  return t;
}

export async function expectText(page, selector, expected, around) {
  const t = (await textOf(page, selector)).replace(/\s+/g, ' ');
  if (t !== expected)
    fail(page, selector, `the text ${JSON.stringify(expected)}`, t, await excerpt(page, around || selector));
  return t;
}

export async function expectAttr(page, selector, attr, expected) {
  await expectPresent(page, selector);
  const v = await page.locator(selector).first().getAttribute(attr);
  const ok = expected instanceof RegExp ? v !== null && expected.test(v) : v === expected;
  if (!ok)
    fail(
      page,
      `${selector} [${attr}]`,
      expected instanceof RegExp ? `a value matching ${expected}` : JSON.stringify(expected),
      v === null ? 'no attribute' : v,
      await excerpt(page, selector),
    );
}

// A form control's current value.
export async function expectValue(page, selector, expected) {
  await expectPresent(page, selector);
  const v = await page.locator(selector).first().inputValue();
  if (v !== expected)
    fail(page, `${selector} (value)`, JSON.stringify(expected), v, await excerpt(page, selector));
}

// The page never shows a secret's value (nor the admin key) anywhere in its HTML.
export async function expectNoSecret(page, stack) {
  const html = await page.content();
  for (const [what, value] of [
    ['the back end token', stack.backendToken],
    ['the admin API key', stack.adminKey],
  ]) {
    if (html.includes(value)) {
      const i = html.indexOf(value);
      fail(
        page,
        'page HTML',
        `never ${what}`,
        'it',
        html.slice(Math.max(0, i - 300), i + 300).replace(value, '«SECRET»'),
      );
    }
  }
}

// The layout every console page shares: <main>, an <h1>, and (except on the login page) the
// Console navigation with its five links.
export const NAV_LINKS = [
  ['Actions', '/console'],
  ['Add new API request', '/console/actions/new'],
  ['Conversation', '/console/chat'],
  ['Outbox', '/console/outbox'],
  ['Audit', '/console/audit'],
];

export async function checkLayout(page, stack, { nav = true } = {}) {
  await expectCount(page, 'main', 1);
  await expectPresent(page, 'h1', 'an <h1>');
  if (!nav) return;
  const navSel = 'nav[aria-label="Console"]';
  await expectPresent(page, navSel, '<nav aria-label="Console">');
  for (const [name, href] of NAV_LINKS) {
    const link = page.locator(navSel).getByRole('link', { name, exact: true });
    const n = await link.count();
    if (n !== 1) fail(page, `${navSel} link "${name}"`, 'exactly one', `${n}`, await excerpt(page, navSel));
    const got = new URL(await link.evaluate((a) => a.href)).pathname.replace(/(.)\/$/, '$1');
    if (got !== href) fail(page, `${navSel} link "${name}" (href)`, href, got, await excerpt(page, navSel));
  }
}

// ---------------------------------------------------------------------------------------------
// axe-core

let axeSource = null;

// Runs axe-core on the page. Returns { violations, blocking }: every violation (each printed
// through `log`), and the serious or critical ones, which fail the test.
export async function axe(page, label, log = console.log) {
  axeSource ??= await readFile(path.join(ROOT, 'node_modules/axe-core/axe.min.js'), 'utf8');
  await page.addScriptTag({ content: axeSource });
  const results = await page.evaluate(() => window.axe.run());
  const lines = [];
  for (const v of results.violations) {
    lines.push(`${label}: [${v.impact}] ${v.id}: ${v.help} (${v.helpUrl})`);
    for (const n of v.nodes.slice(0, 5)) {
      lines.push(`    ${n.target.join(' ')}: ${n.html.slice(0, 200)}`);
      if (n.failureSummary) lines.push(`      ${n.failureSummary.replace(/\n/g, '\n      ')}`);
    }
    if (v.nodes.length > 5) lines.push(`    … and ${v.nodes.length - 5} more`);
  }
  for (const l of lines) log(l);
  const blocking = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  return { violations: results.violations, blocking, lines };
}

// ---------------------------------------------------------------------------------------------
// Screenshots

// Where screenshots go: docs/console/ with CALLOUT_SCREENSHOTS=1 (to be committed), else a temp
// dir (overwritten by each run).
export const SCREENSHOT_DIR =
  process.env.CALLOUT_SCREENSHOTS === '1'
    ? path.join(ROOT, 'docs/console')
    : path.join(os.tmpdir(), 'callout-console-screenshots');

// The screenshots taken by this run, by name.
export const screenshotsTaken = new Set();

export async function screenshot(page, name) {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true, animations: 'disabled', caret: 'hide' });
  screenshotsTaken.add(name);
  return file;
}
