// `crm-lead-js`: push a lead collected in the chat into the CRM. The JavaScript twin of the Rust
// `plugins/crm-lead`: same inputs, output, requests, failures and reply.
//
// POST `{base_url}/crm/leads` with the lead as JSON. The call's idempotency key goes out as
// `Idempotency-Key`, so a retried delivery never creates a second lead. The bearer token is a
// `{{secret.CRM_TOKEN}}` placeholder the host fills in; this code never sees it. An invalid email
// is refused before any request is made.
//
// Built with QuickJS (componentize-qjs; `[build] js_engine` in action.toml) against the
// `action-plugin` world in `wit/` (docs/plugins-js.md).
// The world's imports are ES modules; its `action` export is the `action` object below. WIT
// names become camelCase (`idempotency-key` is `call.idempotencyKey`), enums and variants are
// strings and `{ tag, val }` objects, `list<u8>` is a Uint8Array.

// Namespace imports, `null` for an absent option, a thrown `Failure` for the call's error and
// numbers for u64: these conventions work with both engines `callout build` offers, SpiderMonkey
// (componentize-js, the default) and QuickJS (componentize-qjs, `[build] js_engine = "quickjs"`
// in action.toml); see docs/plugins-js.md.
import * as outboundHttp from 'callout:plugin/outbound-http@0.1.0';
import * as config from 'callout:plugin/config@0.1.0';

const NAME = 'crm-lead-js';
const DESCRIPTION = 'Create a sales lead in the CRM from details collected in the chat';

/** What the agent must collect (JSON Schema 2020-12; the host validates inputs against it). */
const INPUT_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  title: 'Lead',
  description: 'What the agent must collect.',
  type: 'object',
  properties: {
    name: { description: "The person's name.", type: 'string', minLength: 1, maxLength: 200 },
    email: { description: 'Where the sales team can reach them.', type: 'string', format: 'email' },
    company: { description: 'Their company, if they said.', type: ['string', 'null'] },
    inquiry: { description: 'What they asked about.', type: ['string', 'null'] },
  },
  required: ['name', 'email'],
  additionalProperties: false,
};

/** What the agent gets back. */
const OUTPUT_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  title: 'Created',
  description: 'What the agent gets back.',
  type: 'object',
  properties: {
    id: { description: "The CRM's id of the lead.", type: 'string' },
    created_at: { type: ['string', 'null'] },
  },
  required: ['id', 'created_at'],
};

export const action = {
  describe() {
    return {
      name: NAME,
      description: DESCRIPTION,
      inputSchema: JSON.stringify(INPUT_SCHEMA),
      outputSchema: JSON.stringify(OUTPUT_SCHEMA),
    };
  },

  invoke(call) {
    return settle(() => run(JSON.parse(call.inputs), call));
  },
};

function run(inputs, call) {
  const lead = parseLead(inputs);
  const errors = [];
  if (lead.name.trim() === '') errors.push({ field: 'name', reason: 'must not be empty' });
  if (!isEmail(lead.email)) errors.push({ field: 'email', reason: 'is not a valid email address' });
  if (errors.length > 0) throw new Failure({ tag: 'invalid-input', val: errors });

  const base = requireConfig('base_url').replace(/\/+$/, '');
  const resp = request(call, 'post', `${base}/crm/leads`, {
    headers: [['authorization', 'Bearer {{secret.CRM_TOKEN}}']],
    json: lead,
  });
  const created = parseCreated(errorForStatus(resp));
  return {
    data: JSON.stringify(created),
    reply: `Thanks ${lead.name.trim()}, our team will be in touch at ${lead.email}.`,
    variables: '{}',
  };
}

/**
 * The lead as the Rust twin sends it: its fields in order, optional ones left out when absent or
 * null. The host has already validated the inputs against INPUT_SCHEMA; this only guards.
 */
function parseLead(inputs) {
  const fields = ['name', 'email', 'company', 'inquiry'];
  for (const field of Object.keys(inputs)) {
    if (!fields.includes(field)) invalid(field, 'is not a known input');
  }
  const lead = {};
  for (const field of fields) {
    const value = inputs[field] ?? undefined;
    const required = field === 'name' || field === 'email';
    if (value === undefined && required) invalid(field, 'is required');
    if (value !== undefined && typeof value !== 'string') invalid(field, 'must be a string');
    if (value !== undefined) lead[field] = value;
  }
  return lead;
}

/** The CRM's answer as the output: `id` a string, `created_at` a string or null. */
function parseCreated(resp) {
  const body = expectJson(resp);
  const bad = (why) =>
    upstream('protocol', resp.status, `the upstream's response is not the expected JSON: ${why}`);
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw bad('expected an object');
  }
  if (!('id' in body)) throw bad('missing field `id`');
  if (typeof body.id !== 'string') throw bad('invalid type for `id`, expected a string');
  const createdAt = body.created_at ?? null;
  if (createdAt !== null && typeof createdAt !== 'string') {
    throw bad('invalid type for `created_at`, expected a string or null');
  }
  return { id: body.id, created_at: createdAt };
}

function invalid(field, reason) {
  throw new Failure({ tag: 'invalid-input', val: [{ field, reason }] });
}

/** One `@`, a non-empty local part, a dotted domain without empty labels, no spaces. */
function isEmail(s) {
  const at = s.indexOf('@');
  if (at < 0) return false;
  const local = s.slice(0, at);
  const domain = s.slice(at + 1);
  const labels = domain.split('.');
  return local !== '' && !domain.includes('@') && !/[\s\u0000-\u001f\u007f-\u009f]/.test(s) &&
    labels.length >= 2 && labels.every((label) => label !== '');
}

// ---------------------------------------------------------------------------------------------
// Helpers: how HTTP outcomes become the action errors the host understands (the same mapping
// as the Rust SDK, callout-guest). Throw `new Failure(<action-error>)` to fail a call.

/** A failure to report: `payload` is a WIT `action-error`, e.g. `{ tag: 'not-found', val }`. */
class Failure extends Error {
  constructor(payload) {
    super(payload.tag);
    this.payload = payload;
  }
}

/** The host recorded the request instead of sending it (a dry run): nothing to report. */
class DryRun extends Error {}

/** Runs one call's `body` and turns its result or failure into what `invoke` returns. */
function settle(body) {
  try {
    return body();
  } catch (e) {
    if (e instanceof DryRun) return { data: 'null', reply: null, variables: '{}' };
    // A thrown error with a `payload` is the call's `err(payload)`, in both engines.
    if (e instanceof Failure) throw e;
    throw new Failure({ tag: 'internal', val: `unexpected error: ${e}` });
  }
}

function upstream(kind, status, message, retryAfterMs) {
  const val = { kind, status: status ?? null, retryAfterMs: retryAfterMs ?? null, message };
  return new Failure({ tag: 'upstream', val });
}

function requireConfig(key) {
  const value = config.get(key) ?? undefined;
  if (value === undefined) {
    throw new Failure({
      tag: 'internal',
      val: `the config key \`${key}\` is not set: set it in the [config] table of action.toml`,
    });
  }
  return value;
}

/**
 * Sends one request through the host (the plugin's only way out) and returns the response,
 * whatever its status. Writes (post, put, patch, delete) carry the call's idempotency key as
 * `Idempotency-Key` unless `headers` has one; `json` sets the body and its content type.
 * No response at all throws the matching Failure (or DryRun).
 */
function request(call, method, url, { headers: given = [], json, timeoutMs } = {}) {
  const headers = [...given];
  const has = (name) => headers.some(([n]) => n.toLowerCase() === name);
  let body;
  if (json !== undefined) {
    body = utf8(JSON.stringify(json));
    if (!has('content-type')) headers.push(['content-type', 'application/json']);
  }
  const write = ['post', 'put', 'patch', 'delete'].includes(method);
  if (write && call.idempotencyKey && !has('idempotency-key')) {
    headers.push(['Idempotency-Key', call.idempotencyKey]);
  }
  try {
    return outboundHttp.send({ method, url, headers, body: body ?? null, timeoutMs: timeoutMs ?? null });
  } catch (e) {
    throw httpFailure(e.payload ?? { tag: 'protocol', val: String(e) });
  }
}

/** A WIT `http-error` as the failure the action reports. */
function httpFailure(err) {
  switch (err.tag) {
    case 'dry-run':
      return new DryRun();
    case 'denied': // not granted in action.toml
      return new Failure({ tag: 'denied', val: err.val });
    case 'invalid-request':
      return new Failure({ tag: 'internal', val: `invalid request: ${err.val}` });
    case 'timeout':
      return upstream('timeout', undefined, 'the upstream did not answer in time');
    case 'connect':
      return upstream('connect', undefined, err.val);
    case 'response-too-large':
      return upstream('protocol', undefined, `response larger than ${err.val} bytes`);
    default: // protocol
      return upstream('protocol', undefined, String(err.val));
  }
}

/** The response if its status is 1xx to 3xx; else 429, 4xx and 5xx as upstream failures. */
function errorForStatus(resp) {
  const { status } = resp;
  if (status >= 100 && status <= 399) return resp;
  if (status === 429) {
    const retryAfter = resp.headers.find(([n]) => n.toLowerCase() === 'retry-after')?.[1];
    throw upstream('rate-limited', status, 'the upstream answered 429 Too Many Requests',
      parseRetryAfter(retryAfter));
  }
  if (status >= 400 && status <= 499) {
    const snippet = snip(fromUtf8(resp.body, false)); // quoted for the operator
    const message = `the upstream answered ${status}`;
    throw upstream('client-error', status, snippet ? `${message}: ${snippet}` : message);
  }
  if (status >= 500 && status <= 599) {
    throw upstream('server-error', status, `the upstream answered ${status}`);
  }
  throw upstream('protocol', status, `the upstream answered an invalid status ${status}`);
}

/** `Retry-After` in milliseconds when it is delta-seconds (an HTTP-date gives none). */
function parseRetryAfter(value) {
  const secs = value?.trim();
  if (!/^\d+$/.test(secs ?? '')) return undefined;
  // A WIT u64, as a number (both engines take one): exact up to 2^53 ms, saturating there.
  return Math.min(Number(secs) * 1000, Number.MAX_SAFE_INTEGER);
}

/** The start of a body for a message: whitespace collapsed, at most 200 characters. */
function snip(text) {
  const chars = Array.from(text.split(/\s+/).filter(Boolean).join(' '));
  return chars.length <= 200 ? chars.join('') : `${chars.slice(0, 199).join('')}…`;
}

/** The body as JSON; a body that is not JSON is an upstream protocol failure. */
function expectJson(resp) {
  try {
    return JSON.parse(fromUtf8(resp.body, true));
  } catch (e) {
    const why = `the upstream's response is not the expected JSON: ${e.message}`;
    throw upstream('protocol', resp.status, why);
  }
}

/** UTF-8 bytes of `text`. (QuickJS has no TextEncoder; SpiderMonkey's is used when present.) */
function utf8(text) {
  if (typeof TextEncoder !== 'undefined') return new TextEncoder().encode(text);
  const binary = unescape(encodeURIComponent(text));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** `bytes` as UTF-8 text; invalid UTF-8 throws when `fatal`, else decodes as Latin-1. */
function fromUtf8(bytes, fatal) {
  if (typeof TextDecoder !== 'undefined') return new TextDecoder('utf-8', { fatal }).decode(bytes);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 8192) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  try {
    return decodeURIComponent(escape(binary));
  } catch (e) {
    if (fatal) throw new TypeError('the bytes are not valid UTF-8');
    return binary;
  }
}
