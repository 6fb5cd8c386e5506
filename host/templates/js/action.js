// `{{name}}`: look up one item by id in the items API.
//
// GET `{base_url}/items/{id}` with the API's bearer token (a secret the host fills in; the
// plugin only writes its placeholder). An unknown id is `not-found`, which the agent can relay.
//
// componentize-js builds this ES module into a component of Callout's `action-plugin` world
// (wit/). The world's imports are the `callout:plugin/...` modules below; its `action` export is
// the `action` object. The host calls `describe()` once at load and `invoke(call)` once per
// call, each in a fresh instance. WIT names are camelCase here (`call.idempotencyKey`), enums
// are strings ('get'), variants are `{ tag, val }` objects and `list<u8>` is a Uint8Array.

import { send } from 'callout:plugin/outbound-http@0.1.0';
import { get as configGet } from 'callout:plugin/config@0.1.0';

// What the agent sees: JSON Schemas (draft 2020-12) of the inputs and of the outcome's data.
// The host checks every call's inputs against INPUT_SCHEMA (narrowed by action.toml) first.
const INPUT_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  properties: {
    id: { description: "The item's id.", type: 'string', minLength: 1, maxLength: 64 },
  },
  required: ['id'],
  additionalProperties: false,
};
const OUTPUT_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  properties: { id: { type: 'string' }, name: { type: 'string' } },
  required: ['id', 'name'],
};

export const action = {
  describe() {
    return {
      name: '{{name}}',
      description: 'Look up an item by its id',
      inputSchema: JSON.stringify(INPUT_SCHEMA),
      outputSchema: JSON.stringify(OUTPUT_SCHEMA),
    };
  },

  invoke(call) {
    return settle(() => lookup(JSON.parse(call.inputs), call));
  },
};

/** One call: GET the item, then its data and a reply, or the failure the answer means. */
function lookup({ id }, call) {
  const base = requireConfig('base_url'); // [config] in action.toml, overridden in callout.toml
  const url = `${base.replace(/\/+$/, '')}/items/${encodeURIComponent(id)}`;
  const resp = request(call, 'get', url, {
    // The host fills the secret in after its policy check; the plugin never sees it.
    headers: [
      ['authorization', 'Bearer {{secret.API_TOKEN}}'],
      ['accept', 'application/json'],
    ],
  });
  if (resp.status === 404) throw new Failure({ tag: 'not-found', val: `there is no item ${id}` });
  const item = expectJson(errorForStatus(resp));
  if (typeof item?.id !== 'string' || typeof item.name !== 'string') {
    throw upstream('protocol', resp.status, 'unexpected answer: no string `id` and `name`');
  }
  return {
    data: JSON.stringify({ id: item.id, name: item.name }),
    reply: `${item.id} is ${item.name}.`,
    variables: '{}', // conversation variables to set, as a JSON object
  };
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
