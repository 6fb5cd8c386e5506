// `crm-lead-js`: push a lead collected in the chat into the CRM. The JavaScript twin of the Rust
// `plugins/crm-lead`: same inputs, output, requests, failures and reply.
//
// POST `{base_url}/crm/leads` with the lead as JSON. The call's idempotency key goes out as
// `Idempotency-Key`, so a retried delivery never creates a second lead. The bearer token is a
// `{{secret.CRM_TOKEN}}` placeholder the host fills in; this code never sees it. An invalid email
// is refused before any request is made.
//
// Built with componentize-js against the `action-plugin` world in `wit/` (docs/plugins-js.md).
// The world's imports are ES modules; its `action` export is the `action` object below. WIT
// names become camelCase (`idempotency-key` is `call.idempotencyKey`), enums and variants are
// strings and `{ tag, val }` objects, `list<u8>` is a Uint8Array.

import { send } from 'callout:plugin/outbound-http@0.1.0';
import { get as configGet } from 'callout:plugin/config@0.1.0';

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
    if (e instanceof DryRun) return { data: 'null', reply: undefined, variables: '{}' };
    if (e instanceof Failure) return { tag: 'err', val: e.payload };
    return { tag: 'err', val: { tag: 'internal', val: `unexpected error: ${e}` } };
  }
}

function upstream(kind, status, message, retryAfterMs) {
  return new Failure({ tag: 'upstream', val: { kind, status, retryAfterMs, message } });
}

function requireConfig(key) {
  const value = configGet(key);
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
    body = new TextEncoder().encode(JSON.stringify(json));
    if (!has('content-type')) headers.push(['content-type', 'application/json']);
  }
  const write = ['post', 'put', 'patch', 'delete'].includes(method);
  if (write && call.idempotencyKey && !has('idempotency-key')) {
    headers.push(['Idempotency-Key', call.idempotencyKey]);
  }
  try {
    return send({ method, url, headers, body, timeoutMs });
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
    const snippet = snip(new TextDecoder().decode(resp.body)); // quoted for the operator
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
  const ms = BigInt(secs) * 1000n;
  const max = 2n ** 64n - 1n; // a WIT u64: saturate
  return ms > max ? max : ms;
}

/** The start of a body for a message: whitespace collapsed, at most 200 characters. */
function snip(text) {
  const chars = Array.from(text.split(/\s+/).filter(Boolean).join(' '));
  return chars.length <= 200 ? chars.join('') : `${chars.slice(0, 199).join('')}…`;
}

/** The body as JSON; a body that is not JSON is an upstream protocol failure. */
function expectJson(resp) {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(resp.body));
  } catch (e) {
    const why = `the upstream's response is not the expected JSON: ${e.message}`;
    throw upstream('protocol', resp.status, why);
  }
}
