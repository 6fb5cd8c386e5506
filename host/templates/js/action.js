// `{{name}}`: look up one item by id in the items API.
//
// GET `{base_url}/items/{id}` with the API's bearer token (a secret the host fills in; the
// plugin only writes its placeholder). An unknown id is `not-found`, which the agent can relay.
//
// `callout build` makes this ES module a component of Callout's `action-plugin` world
// (wit/). The world's imports are the `callout:plugin/...` modules below; its `action` export is
// the `action` object. The host calls `describe()` once at load and `invoke(call)` once per
// call, each in a fresh instance. WIT names are camelCase here (`call.idempotencyKey`), enums
// are strings ('get'), variants are `{ tag, val }` objects and `list<u8>` is a Uint8Array.

// Namespace imports, `null` for an absent option, a thrown `Failure` for the call's error and
// numbers for u64: these conventions work with both engines `callout build` offers, SpiderMonkey
// (componentize-js, the default) and QuickJS (componentize-qjs, `[build] js_engine = "quickjs"`
// in action.toml); see docs/plugins-js.md.
import * as outboundHttp from 'callout:plugin/outbound-http@0.1.0';
import * as config from 'callout:plugin/config@0.1.0';

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
