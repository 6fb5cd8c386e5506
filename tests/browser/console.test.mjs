// Real-browser tests of the web console of `callout serve` (/console), against its HTML
// contract: headless Chromium (Debian's) driven by playwright-core, accessibility checked by
// axe-core. Run: node --test tests/browser/ (after cargo build and ./dev plugins), or ./dev test.
// See support.mjs for how the server is started and for the environment variables.

import { after, before, describe, test } from 'node:test';
import { stat } from 'node:fs/promises';
import path from 'node:path';

import * as S from './support.mjs';

const { expectAttr, expectContains, expectCount, expectPresent, expectText, expectValue } = S;

// The reply shown in a test result. The contract gives both the "Reply template" control and
// the test result's reply the id `reply`; ids must be unique, so the result's reply is looked
// for inside #test-result (the console names it #user-reply; #reply or #result-reply would
// do too), and the template control is the input or textarea with id reply.
const RESULT_REPLY = '#test-result :is(#user-reply, #reply, #result-reply)';
const REPLY_FIELD = ':is(input, textarea)#reply';

// The no-code action the main flow builds: order status from the demo back end.
const trackOrder = (stack) => ({
  name: 'track-order',
  description: 'Look up the status of an order in the demo back end',
  trigger: 'on-prompt',
  intents: 'track_order',
  patterns: '(?i)track',
  method: 'GET',
  url: `${stack.backendUrl}/orders/{{order_id}}`,
  headers: [{ name: 'authorization', value: 'Bearer ', secret: 'ORDERS_TOKEN' }],
  body: '',
  inputs: [
    {
      name: 'order_id',
      type: 'string',
      pattern: '^[0-9]{6}$',
      prompt: 'What is your 6-digit order number?',
      required: true,
      sample: '123456',
    },
  ],
  vars: [{ name: 'status', pointer: '/status' }],
  reply: 'Your order is {{status}}.',
  fallback: 'Sorry, the order system is not answering right now.',
  mockStatus: '200',
  mockBody: '{"order_id":"123456","status":"shipped","carrier":"UPS"}',
});

// Fills the "Add new API request" form from a spec like trackOrder's.
async function fillActionForm(page, spec) {
  const fill = (sel, v) => page.locator(sel).fill(v);
  await fill('#name', spec.name);
  await fill('#description', spec.description);
  await page.locator(`#action-form input[type=radio][value="${spec.trigger}"]`).check();
  if (spec.trigger === 'on-prompt') {
    await fill('#intents', spec.intents || '');
    await fill('#patterns', spec.patterns || '');
  }
  await page.locator('#method').selectOption(spec.method);
  await fill('#url', spec.url);
  for (const [i, h] of (spec.headers || []).entries()) {
    await fill(`#header-name-${i + 1}`, h.name);
    await fill(`#header-value-${i + 1}`, h.value);
    if (h.secret) await page.locator(`#header-secret-${i + 1}`).selectOption(h.secret);
  }
  await fill('#body', spec.body || '');
  for (const [i, input] of (spec.inputs || []).entries()) {
    const n = i + 1;
    await fill(`#input-name-${n}`, input.name);
    await page.locator(`#input-type-${n}`).selectOption(input.type);
    await fill(`#input-pattern-${n}`, input.pattern || '');
    await fill(`#input-prompt-${n}`, input.prompt || '');
    await page.locator(`#input-required-${n}`).setChecked(Boolean(input.required));
    await fill(`#input-sample-${n}`, input.sample || '');
  }
  for (const [i, v] of (spec.vars || []).entries()) {
    await fill(`#var-name-${i + 1}`, v.name);
    await fill(`#var-pointer-${i + 1}`, v.pointer);
  }
  await fill(REPLY_FIELD, spec.reply);
  await fill('#fallback', spec.fallback);
  await fill('#mock-status', spec.mockStatus || '200');
  await fill('#mock-body', spec.mockBody || '');
}

// The form came back with the values that were sent.
async function expectValuesKept(page, spec) {
  await expectValue(page, '#name', spec.name);
  await expectValue(page, '#description', spec.description);
  await expectValue(page, '#url', spec.url);
  await expectValue(page, '#method', spec.method);
  const radio = `#action-form input[type=radio][value="${spec.trigger}"]`;
  if (!(await page.locator(radio).isChecked())) {
    S.fail(page, `${radio} (checked)`, 'checked', 'not checked', await S.excerpt(page, '#action-form'));
  }
  if (spec.trigger === 'on-prompt') await expectValue(page, '#patterns', spec.patterns);
  for (const [i, input] of (spec.inputs || []).entries()) {
    await expectValue(page, `#input-name-${i + 1}`, input.name);
    await expectValue(page, `#input-pattern-${i + 1}`, input.pattern || '');
    await expectValue(page, `#input-sample-${i + 1}`, input.sample || '');
    if ((await page.locator(`#input-required-${i + 1}`).isChecked()) !== Boolean(input.required)) {
      S.fail(
        page,
        `#input-required-${i + 1} (checked)`,
        String(Boolean(input.required)),
        'the opposite',
        await S.excerpt(page, `#input-required-${i + 1}`),
      );
    }
  }
  for (const [i, v] of (spec.vars || []).entries())
    await expectValue(page, `#var-pointer-${i + 1}`, v.pointer);
  await expectValue(page, REPLY_FIELD, spec.reply);
  await expectValue(page, '#fallback', spec.fallback);
}

// Disables the browser's and the page's own validation, so a submit reaches the server.
async function bypassInPageValidation(page) {
  await page.evaluate(() => {
    document.getElementById('action-form').noValidate = true;
    // Capture-phase listeners on window run first: the page's scripts never see the events,
    // and the default action (submitting with the clicked button's op) still happens.
    for (const type of ['submit', 'click', 'invalid']) {
      window.addEventListener(type, (e) => e.stopImmediatePropagation(), true);
    }
  });
}

const sameText = (s) => s.replace(/\s+/g, ' ').trim();

let stack;
let browser;
// Set by the main flow once "track-order" is saved (the axe test visits its page).
let savedAction = null;
// Set by the main flow once its live test went out (the audit test looks for it).
let liveSent = false;

describe('callout console in headless Chromium', () => {
  before(async () => {
    stack = await S.startStack();
    browser = await S.launchBrowser();
  });

  after(async () => {
    await browser?.close();
    if (stack) await stack.stop();
  });

  test('login: no session, a wrong key, then the admin key', async (t) => {
    await S.withSession(
      browser,
      stack,
      async ({ page, context }) => {
        await page.goto(`${stack.origin}/console`);
        if (new URL(page.url()).pathname !== '/console/login') {
          S.fail(
            page,
            'GET /console without a session',
            'a redirect to /console/login',
            page.url(),
            await S.excerpt(page),
          );
        }
        await S.checkLayout(page, stack, { nav: false });
        await expectText(page, 'label[for="key"]', 'Admin API key');
        await expectAttr(page, 'input#key', 'type', 'password');
        await expectAttr(page, 'input#key', 'name', 'key');

        const wrong = `wrong-${stack.adminKey.slice(0, 8)}-not-a-key`;
        await page.locator('#key').fill(wrong);
        await S.submit(page, 'Sign in');
        await expectAttr(page, '#error-summary', 'role', 'alert');
        await expectContains(page, '#error-summary', 'not an admin key');
        await expectPresent(page, 'input#key', 'the key field again');
        if ((await page.content()).includes(wrong)) {
          S.fail(
            page,
            'page after a wrong key',
            'the wrong key not echoed back',
            'it in the HTML',
            await S.excerpt(page, 'form'),
          );
        }
        await page.goto(`${stack.origin}/console`);
        if (new URL(page.url()).pathname !== '/console/login') {
          S.fail(
            page,
            'GET /console after a wrong key',
            'still a redirect to /console/login',
            page.url(),
            await S.excerpt(page),
          );
        }

        await page.locator('#key').fill(stack.adminKey);
        await S.submit(page, 'Sign in');
        const p = new URL(page.url()).pathname;
        if (p !== '/console' && p !== '/console/')
          S.fail(
            page,
            'sign in with the admin key',
            'a redirect to /console',
            page.url(),
            await S.excerpt(page),
          );
        await expectText(page, 'h1', 'Actions');
        await S.expectNoSecret(page, stack);
        const cookies = await context.cookies(); // any path (the console may scope it to /console)
        if (cookies.length === 0) S.fail(page, 'cookies', 'a session cookie', 'none', '');
        for (const c of cookies) {
          t.diagnostic(
            `session cookie ${c.name}: httpOnly=${c.httpOnly} sameSite=${c.sameSite} path=${c.path}`,
          );
          if (c.value.includes(stack.adminKey)) {
            S.fail(page, `cookie ${c.name}`, 'a session id, not the admin key itself', 'the admin key', '');
          }
        }
      },
      { login: false },
    );
  });

  test('keyboard: Tab reaches the key field and "Sign in", Enter submits', async () => {
    await S.withSession(
      browser,
      stack,
      async ({ page }) => {
        await S.goto(page, stack, '/console/login');
        const focused = () =>
          page.evaluate(() => {
            const e = document.activeElement;
            if (!e || e === document.body) return 'body';
            const name =
              e.tagName === 'BUTTON' || e.type === 'submit'
                ? `[${(e.textContent || e.value || '').trim()}]`
                : '';
            return `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}${name}`;
          });
        const seen = [];
        const tabTo = async (want, max) => {
          for (let i = 0; i < max; i++) {
            await page.keyboard.press('Tab');
            const f = await focused();
            seen.push(f);
            if (want(f)) return;
          }
          S.fail(page, 'Tab order', 'to reach the target', seen.join(' → '), await S.excerpt(page));
        };
        await tabTo((f) => f === 'input#key', 30);
        await page.keyboard.type(stack.adminKey);
        await tabTo((f) => /^(button|input)(#[^[]*)?\[Sign in\]$/.test(f), 10);
        await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.keyboard.press('Enter')]);
        const p = new URL(page.url()).pathname;
        if (p !== '/console' && p !== '/console/') {
          S.fail(page, 'Enter on "Sign in"', 'a redirect to /console', page.url(), await S.excerpt(page));
        }
      },
      { login: false },
    );
  });

  test('keyboard: every focus stop of the form shows a focus indicator', async () => {
    await S.withSession(browser, stack, async ({ page }) => {
      await S.goto(page, stack, '/console/actions/new');
      const stops = [];
      for (let i = 0; i < 150; i++) {
        await page.keyboard.press('Tab');
        const stop = await page.evaluate(() => {
          const e = document.activeElement;
          if (!e || e === document.body || e.focusStopSeen) return null; // done, or wrapped around
          e.focusStopSeen = true;
          const st = getComputedStyle(e);
          const outline = st.outlineStyle !== 'none' && parseFloat(st.outlineWidth) > 0;
          const shadow = st.boxShadow && st.boxShadow !== 'none';
          const label =
            (e.id ? `#${e.id}` : '') || `[${(e.textContent || e.value || '').trim().slice(0, 30)}]`;
          const what = `${e.tagName.toLowerCase()}${label}`;
          return {
            what,
            visible: outline || shadow,
            style: `outline: ${st.outline}; box-shadow: ${st.boxShadow}`,
          };
        });
        if (!stop) break;
        stops.push(stop);
      }
      if (stops.length < 20)
        S.fail(
          page,
          'Tab stops of the form',
          'at least 20 (every control)',
          `${stops.length}: ${stops.map((x) => x.what).join(' ')}`,
          '',
        );
      const invisible = stops.filter((x) => !x.visible);
      if (invisible.length)
        S.fail(
          page,
          'focus indicator',
          'visible on every focus stop',
          invisible.map((x) => `${x.what} (${x.style})`).join(', '),
          '',
        );
    });
  });

  test('form: labels, ids, fieldsets, options and buttons of the contract', async () => {
    await S.withSession(browser, stack, async ({ page }) => {
      await S.goto(page, stack, '/console/actions/new');
      await S.checkLayout(page, stack);
      await expectAttr(page, 'form#action-form', 'method', /^post$/i);
      await expectAttr(page, 'form#action-form', 'action', '/console/actions/draft');

      const labels = [
        ['Name', 'name'],
        ['Description', 'description'],
        ['Intents (comma-separated)', 'intents'],
        ['Message patterns (one regular expression per line)', 'patterns'],
        ['Method', 'method'],
        ['Endpoint URL', 'url'],
        ['Body template (JSON)', 'body'],
        ['Variable name 1', 'var-name-1'],
        ['JSON Pointer 1', 'var-pointer-1'],
        ['Reply template', 'reply'],
        ['Error message', 'fallback'],
        ['Mock status', 'mock-status'],
        ['Mock response body', 'mock-body'],
      ];
      for (const i of [1, 2, 3]) {
        labels.push(
          [`Header name ${i}`, `header-name-${i}`],
          [`Header value ${i}`, `header-value-${i}`],
          [`Secret for header ${i}`, `header-secret-${i}`],
          [`Input name ${i}`, `input-name-${i}`],
          [`Type of input ${i}`, `input-type-${i}`],
          [`Pattern of input ${i}`, `input-pattern-${i}`],
          [`Question for input ${i}`, `input-prompt-${i}`],
          [`Required input ${i}`, `input-required-${i}`],
          [`Sample value of input ${i}`, `input-sample-${i}`],
        );
      }
      const problems = await page.evaluate(
        ({ labels }) => {
          const norm = (s) => s.replace(/\s+/g, ' ').trim();
          const visible = (el) => (el.checkVisibility ? el.checkVisibility() : el.offsetParent !== null);
          const out = [];
          const all = [...document.querySelectorAll('label')];
          for (const [text, id] of labels) {
            const found = all.filter((l) => norm(l.textContent) === text);
            if (found.length !== 1) {
              out.push(`label "${text}": expected exactly one <label>, got ${found.length}`);
              continue;
            }
            const c = found[0].control;
            if (!c || c.id !== id)
              out.push(
                `label "${text}": expected it to label #${id}, got ${c ? `#${c.id || c.tagName}` : 'no control'}`,
              );
            if (!visible(found[0])) out.push(`label "${text}": expected visible, got hidden`);
          }
          const type = { method: 'SELECT', body: 'TEXTAREA', 'mock-body': 'TEXTAREA' };
          for (const i of [1, 2, 3]) {
            type[`header-secret-${i}`] = 'SELECT';
            type[`input-type-${i}`] = 'SELECT';
          }
          for (const [id, tag] of Object.entries(type)) {
            const el = document.getElementById(id);
            if (el && el.tagName !== tag)
              out.push(`#${id}: expected a <${tag.toLowerCase()}>, got <${el.tagName.toLowerCase()}>`);
          }
          for (const i of [1, 2, 3]) {
            const el = document.getElementById(`input-required-${i}`);
            if (el && el.type !== 'checkbox')
              out.push(`#input-required-${i}: expected a checkbox, got type=${el.type}`);
          }
          // Every control of the form has a visible label.
          const form = document.getElementById('action-form');
          for (const c of form ? form.querySelectorAll('input, select, textarea') : []) {
            if (['hidden', 'submit', 'button', 'reset', 'image'].includes(c.type)) continue;
            const ls = [...(c.labels || [])].filter(visible);
            if (ls.length === 0)
              out.push(`${c.outerHTML.slice(0, 120)}: expected a visible <label>, got none`);
          }
          // Radios of the trigger.
          for (const [text, value] of [
            ['Based on prompt', 'on-prompt'],
            ['When chat ends', 'chat-end'],
          ]) {
            const l = all.find((x) => norm(x.textContent) === text);
            const c = l && l.control;
            if (!c || c.type !== 'radio' || c.value !== value)
              out.push(
                `label "${text}": expected a radio with value ${value}, got ${c ? c.outerHTML.slice(0, 120) : 'no control'}`,
              );
          }
          // Fieldsets and their legends.
          const legends = [...document.querySelectorAll('fieldset > legend')].map((l) => norm(l.textContent));
          for (const l of ['Trigger', 'Headers', 'Inputs', 'Response', 'Test']) {
            if (!legends.includes(l))
              out.push(`fieldset legend "${l}": expected, got legends ${JSON.stringify(legends)}`);
          }
          // Options.
          const values = (id) => [...(document.getElementById(id)?.options || [])].map((o) => o.value);
          const method = values('method');
          for (const m of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'])
            if (!method.includes(m))
              out.push(`#method: expected an option ${m}, got ${JSON.stringify(method)}`);
          const types = values('input-type-1');
          for (const m of ['string', 'integer', 'number', 'boolean'])
            if (!types.includes(m))
              out.push(`#input-type-1: expected an option ${m}, got ${JSON.stringify(types)}`);
          const secret = document.getElementById('header-secret-1');
          const first = secret?.options[0];
          if (!first || first.value !== '' || norm(first.textContent) !== '(none)')
            out.push(
              `#header-secret-1: expected a first option value "" "(none)", got ${first ? first.outerHTML : 'none'}`,
            );
          if (!values('header-secret-1').includes('ORDERS_TOKEN'))
            out.push(
              `#header-secret-1: expected the declared secret ORDERS_TOKEN, got ${JSON.stringify(values('header-secret-1'))}`,
            );
          const ms = document.getElementById('mock-status');
          if (ms && ms.value !== '200')
            out.push(`#mock-status: expected the default value 200, got ${JSON.stringify(ms.value)}`);
          return out;
        },
        { labels },
      );
      for (const [text, value] of [
        ['Dry run', 'dry-run'],
        ['Test with mock response', 'mock'],
        ['Send live test', 'live'],
        ['Save', 'save'],
      ]) {
        const b = page.getByRole('button', { name: text, exact: true });
        const n = await b.count();
        if (n !== 1) {
          problems.push(`button "${text}": expected exactly one, got ${n}`);
          continue;
        }
        const attrs = await b.evaluate((e) => ({
          type: e.type,
          name: e.name,
          value: e.value,
          form: e.form?.id,
        }));
        if (
          attrs.type !== 'submit' ||
          attrs.name !== 'op' ||
          attrs.value !== value ||
          attrs.form !== 'action-form'
        ) {
          problems.push(
            `button "${text}": expected type=submit name=op value=${value} in #action-form, got ${JSON.stringify(attrs)}`,
          );
        }
      }
      if (problems.length) {
        S.fail(
          page,
          '#action-form',
          "the contract's controls",
          `${problems.length} difference(s):\n  ${problems.join('\n  ')}`,
          await S.excerpt(page, '#action-form', 2500),
        );
      }
      await S.expectNoSecret(page, stack);
    });
  });

  test('validation: in the page (empty Name) and on the server (Name, Endpoint URL)', async () => {
    await S.withSession(browser, stack, async ({ page, requests }) => {
      const spec = { ...trackOrder(stack), headers: [] };

      // In the page: an empty Name blocks the submit.
      await S.goto(page, stack, '/console/actions/new');
      await fillActionForm(page, { ...spec, name: '' });
      await expectAttr(page, '#name', 'required', /.*/);
      const before = requests.length;
      await page.getByRole('button', { name: 'Dry run', exact: true }).click();
      await page.waitForTimeout(500);
      const posted = requests.slice(before).filter((r) => r.startsWith('POST '));
      if (posted.length)
        S.fail(
          page,
          'Dry run with an empty Name',
          'no request (blocked in the page)',
          posted.join(', '),
          await S.excerpt(page, '#action-form'),
        );
      await expectCount(page, '#name:invalid', 1, '#name');
      // docs/console.md: "The browser's own validation messages are shown the same way."
      await expectAttr(page, '#name', 'aria-invalid', 'true');
      await expectContains(page, '#name-error', /\S/, '#name');

      // On the server: a bad name and a bad URL, with the page's validation bypassed.
      const bad = { ...spec, name: 'Bad Name!', url: 'not a url' };
      await fillActionForm(page, bad);
      await bypassInPageValidation(page);
      await S.submit(page, 'Dry run');
      const soft = S.softAssertions();
      await soft(() => expectAttr(page, '#error-summary', 'role', 'alert'));
      // docs/console.md: the summary is focused.
      await soft(async () => {
        const focused = await page.evaluate(
          () => document.activeElement?.id || document.activeElement?.tagName,
        );
        if (focused !== 'error-summary')
          S.fail(
            page,
            'document.activeElement',
            '#error-summary',
            focused,
            await S.excerpt(page, '#error-summary'),
          );
      });
      for (const [id, words] of [
        ['name', /lower-case/i],
        ['url', /./],
      ]) {
        await soft(() =>
          expectPresent(page, `#error-summary a[href="#${id}"]`, `a link to #${id} in the error summary`),
        );
        await soft(() => expectAttr(page, `#${id}`, 'aria-invalid', 'true'));
        await soft(() =>
          expectAttr(page, `#${id}`, 'aria-describedby', new RegExp(`(^|\\s)${id}-error(\\s|$)`)),
        );
        await soft(() =>
          expectPresent(page, `p#${id}-error.field-error`, `<p id="${id}-error" class="field-error">`),
        );
        await soft(() => expectContains(page, `#${id}-error`, words));
      }
      await soft(async () => {
        const invalid = await page
          .locator('[aria-invalid="true"]')
          .evaluateAll((els) => els.map((e) => `#${e.id}`));
        const extra = invalid.filter((id) => id !== '#name' && id !== '#url');
        if (extra.length)
          S.fail(
            page,
            '[aria-invalid="true"]',
            'only #name and #url (the rest is valid)',
            invalid.join(' '),
            await S.excerpt(page, '#error-summary'),
          );
      });
      await soft(() => expectValue(page, '#name', 'Bad Name!'));
      await soft(() => expectValue(page, '#url', 'not a url'));
      await soft(() => expectValue(page, '#description', spec.description));
      await soft(() => expectValue(page, REPLY_FIELD, spec.reply));
      soft.check();
    });
  });

  test('add → test → save → invoke: a no-code request to the demo back end', async (t) => {
    const spec = trackOrder(stack);
    await S.withSession(browser, stack, async ({ page }) => {
      let broken = null;
      const step = (name, fn) =>
        t.test(name, async (st) => {
          if (broken) {
            st.skip(`not run: "${broken}" failed`);
            return;
          }
          try {
            await fn(st);
            await S.expectNoSecret(page, stack);
          } catch (e) {
            broken = name;
            throw e;
          }
        });
      let conversationId = null;
      const requestLine = `GET ${stack.backendUrl}/orders/123456`;
      const authLine = /^\s*authorization:\s*Bearer \{\{secret\.ORDERS_TOKEN\}\}\s*$/im;
      const expectRequest = async () => {
        const req = await expectContains(page, '#request', requestLine, '#test-result');
        if (!authLine.test(req))
          S.fail(
            page,
            '#request',
            'a header line "authorization: Bearer {{secret.ORDERS_TOKEN}}"',
            req,
            await S.excerpt(page, '#test-result'),
          );
        const n = req.split('{{secret.ORDERS_TOKEN}}').length - 1;
        if (n !== 1)
          S.fail(
            page,
            '#request',
            'exactly one {{secret.ORDERS_TOKEN}}',
            `${n}: ${req}`,
            await S.excerpt(page, '#test-result'),
          );
      };
      const expectResultFrame = async () => {
        await expectAttr(page, 'section#test-result', 'aria-live', 'polite');
        await expectText(page, '#test-result h2', 'Test result');
        await expectValuesKept(page, spec);
      };
      const keep = async (n) => {
        await S.submit(page, 'Keep as test case');
        await expectCount(page, '#cases > li', n, '#cases');
      };

      await step('the form is linked from the actions list', async () => {
        await S.goto(page, stack, '/console');
        const link = page.locator('main').getByRole('link', { name: 'Add new API request', exact: true });
        const n = await link.count();
        const nav = page
          .locator('nav[aria-label="Console"]')
          .getByRole('link', { name: 'Add new API request', exact: true });
        const target = n > 0 ? link.first() : nav.first();
        if (n === 0 && (await nav.count()) === 0)
          S.fail(page, 'link "Add new API request"', 'a link', 'none', await S.excerpt(page));
        await S.clickAndWait(page, target, 'link "Add new API request"');
        if (new URL(page.url()).pathname !== '/console/actions/new')
          S.fail(
            page,
            'link "Add new API request"',
            '/console/actions/new',
            page.url(),
            await S.excerpt(page),
          );
        await expectPresent(page, 'form#action-form');
      });

      await step('dry run: the exact request, with the secret as a placeholder', async () => {
        await fillActionForm(page, spec);
        await S.submit(page, 'Dry run');
        await expectResultFrame();
        await expectRequest();
      });

      await step('save without a kept test case: refused by the publish gate', async () => {
        await S.submit(page, 'Save');
        if (new URL(page.url()).pathname === `/console/actions/${spec.name}`) {
          S.fail(
            page,
            'Save with no test case',
            'the form again (publish gate)',
            page.url(),
            await S.excerpt(page),
          );
        }
        await expectAttr(page, '#error-summary', 'role', 'alert');
        await expectContains(page, '#error-summary', /publish gate/i);
        await expectValuesKept(page, spec);
      });

      await step('mock 200: the reply from the mapped variable; keep it', async () => {
        await page.locator('#mock-status').fill('200');
        await page.locator('#mock-body').fill(spec.mockBody);
        await S.submit(page, 'Test with mock response');
        await expectResultFrame();
        await expectRequest();
        await expectContains(page, '#response-status', '200', '#test-result');
        await expectPresent(page, 'pre#response-headers');
        await expectContains(page, 'pre#response-body', 'shipped', '#test-result');
        await expectText(page, RESULT_REPLY, 'Your order is shipped.', '#test-result');
        await expectContains(page, '#outcome', /\bok\b/i, '#test-result');
        await S.screenshot(page, 'action-form-test-result');
        await keep(1);
      });

      await step('mock 503: the error message; keep it', async () => {
        await page.locator('#mock-status').fill('503');
        await page.locator('#mock-body').fill('upstream unavailable');
        await S.submit(page, 'Test with mock response');
        await expectResultFrame();
        await expectContains(page, '#response-status', '503', '#test-result');
        await expectText(page, RESULT_REPLY, spec.fallback, '#test-result');
        await expectContains(page, '#outcome', /server-error/i, '#test-result');
        await keep(2);
      });

      await step('live test against the demo back end; keep it', async () => {
        await S.submit(page, 'Send live test');
        await expectResultFrame();
        await expectRequest();
        await expectContains(page, '#response-status', '200', '#test-result');
        await expectContains(page, 'pre#response-body', '"shipped"', '#test-result');
        await expectText(page, RESULT_REPLY, 'Your order is shipped.', '#test-result');
        await expectContains(page, '#outcome', /\bok\b/i, '#test-result');
        const got = (await S.backendRequests(stack)).filter(
          (r) => r.path === '/orders/123456' && r.method === 'GET',
        );
        if (!got.some((r) => r.authorized)) {
          S.fail(
            page,
            'demo back end /_demo/requests',
            'a GET /orders/123456 with the bearer token',
            JSON.stringify(got),
            '',
          );
        }
        liveSent = true;
        await keep(3);
      });

      await step('save: the publish gate passes with the 3 cases; versions listed', async () => {
        await S.submit(page, 'Save');
        const p = new URL(page.url()).pathname;
        if (p !== `/console/actions/${spec.name}`)
          S.fail(
            page,
            'Save',
            `a redirect to /console/actions/${spec.name}`,
            page.url(),
            await S.excerpt(page),
          );
        savedAction = spec.name;
        await S.checkLayout(page, stack);
        await expectText(page, 'h1', spec.name);
        const gate = await expectContains(page, '#gate', /passed/i);
        if (!/\b3\b/.test(gate))
          S.fail(page, '#gate', 'the number of cases (3)', gate, await S.excerpt(page, '#gate'));
        const items = await page.locator('#versions :is(li, tbody tr)').count();
        if (items < 1)
          S.fail(
            page,
            '#versions',
            'at least one version (li or table row)',
            `${items}`,
            await S.excerpt(page, '#versions'),
          );
        // Newest first: where the items carry times (YYYY-MM-DD HH:MM:SS), they never increase.
        const times = (await page.locator('#versions :is(li, tbody tr)').allTextContents())
          .map((x) => /\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d/.exec(x)?.[0])
          .filter(Boolean);
        if (times.some((x, i) => i > 0 && x > times[i - 1]))
          S.fail(page, '#versions', 'newest first', times.join(', '), await S.excerpt(page, '#versions'));
        await S.screenshot(page, 'action-page');
      });

      await step('actions list: the new action and order-status loaded', async () => {
        await S.goto(page, stack, '/console');
        await S.checkLayout(page, stack);
        await expectText(page, 'h1', 'Actions');
        for (const name of [spec.name, 'order-status']) {
          const row = `table#actions tr[data-action="${name}"]`;
          await expectText(page, `${row} .status`, 'loaded', 'table#actions');
          await expectPresent(page, `${row} .trigger`);
          await expectPresent(page, `${row} .last-calls`);
        }
        await S.screenshot(page, 'actions');
      });

      await step('conversation: the action answers "track my order 123456"', async () => {
        await S.goto(page, stack, '/console/chat');
        await S.checkLayout(page, stack);
        await page.locator('#message').fill('hello');
        await S.submit(page, 'Send');
        await expectContains(page, '#transcript', 'hello');
        await page.locator('#message').fill('track my order 123456');
        await page.locator('#values').fill('order_id=123456');
        await S.submit(page, 'Send');
        const transcript = sameText(await S.textOf(page, 'ol#transcript'));
        if (!transcript.includes('hello'))
          S.fail(
            page,
            'ol#transcript',
            'the first message still there (same conversation)',
            transcript,
            await S.excerpt(page, '#transcript'),
          );
        const replies = await page.locator('ol#transcript > li.action-reply').allTextContents();
        if (!replies.some((r) => sameText(r).includes('Your order is shipped.'))) {
          S.fail(
            page,
            'ol#transcript > li.action-reply',
            'one saying "Your order is shipped."',
            JSON.stringify(replies),
            await S.excerpt(page, '#transcript'),
          );
        }
        await S.screenshot(page, 'conversation');
        const hidden = 'form input[type=hidden][name="id"]';
        await expectPresent(page, hidden, 'the conversation id in a hidden input');
        conversationId = await page.locator(hidden).first().inputValue();
        await S.submit(page, 'End chat');
        await expectPresent(page, 'ol#transcript');
      });

      await step('a new page load starts a new conversation; ?id= reopens one', async () => {
        await S.goto(page, stack, '/console/chat');
        const items = await page.locator('ol#transcript > li').count();
        if (items !== 0)
          S.fail(
            page,
            'ol#transcript > li',
            'none (a new conversation)',
            `${items}`,
            await S.excerpt(page, '#transcript'),
          );
        const fresh = await page.locator('form input[type=hidden][name="id"]').first().inputValue();
        if (fresh === conversationId)
          S.fail(page, 'input[name=id]', 'a new conversation id', fresh, await S.excerpt(page, 'form'));
        await S.goto(page, stack, `/console/chat?id=${encodeURIComponent(conversationId)}`);
        await expectContains(page, 'ol#transcript', 'track my order 123456');
      });
    });
  });

  test('actions list: an action that cannot load reads "failed: <reason>"', async () => {
    await S.withSession(browser, stack, async ({ page }) => {
      await S.goto(page, stack, '/console');
      // broken-example/action.toml names a component that does not exist (support.mjs).
      await expectContains(
        page,
        'table#actions tr[data-action="broken-example"] .status',
        /^failed: \S/,
        'table#actions',
      );
    });
  });

  test('outbox: a chat-end delivery that cannot run is a dead letter with "Retry"', async () => {
    // A chat-end action with a required input the conversation never gives: the outbox
    // dead-letters it as needs-input without calling it (host/src/delivery.rs).
    const spec = {
      name: 'lead-note',
      description: 'Send the customer e-mail to the CRM when the chat ends',
      trigger: 'chat-end',
      method: 'POST',
      url: `${stack.backendUrl}/crm/leads`,
      headers: [{ name: 'content-type', value: 'application/json' }],
      body: '{"email": "{{email}}"}',
      inputs: [
        {
          name: 'email',
          type: 'string',
          pattern: '',
          prompt: 'What is your e-mail address?',
          required: true,
          sample: 'ada@example.com',
        },
      ],
      vars: [{ name: 'id', pointer: '/id' }],
      reply: 'Lead {{id}} saved.',
      fallback: 'The CRM could not be updated.',
      mockStatus: '201',
      mockBody: '{"id":"L-1"}',
    };
    await S.withSession(browser, stack, async ({ page }) => {
      await S.goto(page, stack, '/console/actions/new');
      await fillActionForm(page, spec);
      await S.submit(page, 'Test with mock response');
      await expectText(page, RESULT_REPLY, 'Lead L-1 saved.', '#test-result');
      await S.submit(page, 'Keep as test case');
      await expectCount(page, '#cases > li', 1, '#cases');
      await S.submit(page, 'Save');
      if (new URL(page.url()).pathname !== `/console/actions/${spec.name}`) {
        S.fail(
          page,
          'Save',
          `a redirect to /console/actions/${spec.name}`,
          page.url(),
          await S.excerpt(page),
        );
      }
      await expectContains(page, '#gate', /passed/i);

      await S.goto(page, stack, '/console/chat');
      await page.locator('#message').fill('hello');
      await S.submit(page, 'Send');
      await S.submit(page, 'End chat');

      const row = 'table#outbox tr:has(td)';
      const deadRow = page.locator(row).filter({ hasText: spec.name }).filter({ hasText: /dead/i });
      const deadline = Date.now() + 30_000;
      for (;;) {
        await S.goto(page, stack, '/console/outbox');
        if ((await deadRow.count()) > 0) break;
        if (Date.now() > deadline)
          S.fail(
            page,
            `${row} for ${spec.name}`,
            'a row in state dead',
            (await page.locator(row).allTextContents()).map(sameText).join(' | ') || 'no rows',
            await S.excerpt(page, 'table#outbox'),
          );
        await page.waitForTimeout(500);
      }
      await S.checkLayout(page, stack);
      const header = (await page.locator('table#outbox th').allTextContents()).map(sameText);
      if (!header.some((h) => /state/i.test(h)))
        S.fail(
          page,
          'table#outbox th',
          'a "State" column',
          JSON.stringify(header),
          await S.excerpt(page, 'table#outbox'),
        );
      // The button's visible text is "Retry"; its accessible name may say which delivery.
      const retryName = /^Retry\b/;
      const retry = deadRow.first().getByRole('button', { name: retryName });
      if ((await retry.count()) !== 1)
        S.fail(
          page,
          'dead row: button "Retry"',
          'one',
          `${await retry.count()}`,
          await S.excerpt(page, 'table#outbox'),
        );
      const others = page
        .locator(row)
        .filter({ hasNotText: /dead/i })
        .getByRole('button', { name: retryName });
      if ((await others.count()) > 0)
        S.fail(
          page,
          'rows not dead',
          'no "Retry" button',
          `${await others.count()}`,
          await S.excerpt(page, 'table#outbox'),
        );
      await S.screenshot(page, 'outbox');
      await S.clickAndWait(page, retry, 'button "Retry"');
      await expectPresent(page, 'table#outbox');
      await S.expectNoSecret(page, stack);
    });
  });

  test('audit: decisions and reasons of the outbound requests', async (t) => {
    await S.withSession(browser, stack, async ({ page }) => {
      await S.goto(page, stack, '/console/audit');
      await S.checkLayout(page, stack);
      await expectPresent(page, 'table#audit');
      const header = (await page.locator('table#audit th').allTextContents()).map(sameText);
      const decision = header.findIndex((h) => /decision/i.test(h));
      const reason = header.findIndex((h) => /reason/i.test(h));
      if (decision < 0 || reason < 0)
        S.fail(
          page,
          'table#audit th',
          '"Decision" and "Reason" columns',
          JSON.stringify(header),
          await S.excerpt(page, 'table#audit'),
        );
      const rows = await page
        .locator('table#audit tbody tr:has(td)')
        .evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent.trim())));
      if (rows.length === 0)
        S.fail(
          page,
          'table#audit rows',
          'the requests of the tests so far',
          'none',
          await S.excerpt(page, 'table#audit'),
        );
      t.diagnostic(`decisions seen: ${[...new Set(rows.map((c) => c[decision]))].join(', ')}`);
      if (liveSent && !rows.some((cells) => /allow/i.test(cells[decision] || ''))) {
        S.fail(
          page,
          'table#audit rows',
          'an allowed request (the live test and the conversation went out)',
          JSON.stringify(rows.slice(0, 5)),
          await S.excerpt(page, 'table#audit'),
        );
      }
      await S.expectNoSecret(page, stack);
    });
  });

  test('accessibility (axe-core): no serious or critical violation on any screen', async (t) => {
    const blocking = [];
    await S.withSession(browser, stack, async ({ page }) => {
      const check = async (label, { nav = true } = {}) => {
        await S.checkLayout(page, stack, { nav });
        const r = await S.axe(page, label, (l) => t.diagnostic(l));
        for (const v of r.blocking)
          blocking.push(
            `${label}: [${v.impact}] ${v.id}: ${v.help} — ${v.nodes
              .map((n) => n.target.join(' '))
              .slice(0, 5)
              .join(', ')}`,
          );
        if (r.violations.length === 0) t.diagnostic(`${label}: no violations`);
      };
      await S.goto(page, stack, '/console/login');
      await check('login', { nav: false });
      await S.login(page, stack);
      await check('actions list');
      await S.goto(page, stack, '/console/actions/new');
      await check('form (empty)');
      await fillActionForm(page, { ...trackOrder(stack), name: 'Bad Name!', url: 'not a url', headers: [] });
      await bypassInPageValidation(page);
      await S.submit(page, 'Dry run');
      await expectPresent(page, '#error-summary');
      await check('form (with errors)');
      await S.goto(page, stack, '/console/actions/new');
      await fillActionForm(page, { ...trackOrder(stack), name: 'axe-probe' });
      await S.submit(page, 'Test with mock response');
      await expectPresent(page, '#test-result');
      await check('form (test result)');
      const action = savedAction || 'order-status';
      await S.goto(page, stack, `/console/actions/${action}`);
      await check(`action page (${action})`);
      await S.goto(page, stack, '/console/chat');
      await page.locator('#message').fill('hello');
      await S.submit(page, 'Send');
      await check('conversation');
      await S.goto(page, stack, '/console/outbox');
      await check('outbox');
      await S.goto(page, stack, '/console/audit');
      await check('audit');
    });
    if (blocking.length) throw new Error(`serious or critical axe violations:\n  ${blocking.join('\n  ')}`);
  });

  test('screenshots of the main screens were written', async (t) => {
    const names = ['actions', 'action-form-test-result', 'action-page', 'conversation', 'outbox'];
    const missing = [];
    for (const n of names) {
      const f = path.join(S.SCREENSHOT_DIR, `${n}.png`);
      const s = S.screenshotsTaken.has(n) ? await stat(f).catch(() => null) : null;
      if (!s) missing.push(n);
      else t.diagnostic(`${f} (${s.size} bytes)`);
    }
    if (missing.length)
      throw new Error(
        `no fresh screenshot in ${S.SCREENSHOT_DIR} for: ${missing.join(', ')} (see the tests that take them)`,
      );
  });
});
