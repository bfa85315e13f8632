// Shared helpers for the API test suite. Built-ins only: node:test, node:assert/strict,
// node:crypto and the global fetch. Every request goes through the proxy at API_URL (default:
// 127.0.0.1 on PROXY_PORT, else scripts/lib/defaults.sh's, read by tests/lib/defaults.mjs).

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { localUrl } from '../tests/lib/defaults.mjs';

export { randomUUID };

export const BASE_URL = (process.env.API_URL ?? localUrl('PROXY_PORT')).replace(/\/+$/, '');

/** A UUID in its hyphenated textual form (any version, either case). */
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** RFC 3339 date-time with a numeric offset, as in `2021-05-12T18:29:40.206924+00:00`. */
export const RFC3339_WITH_OFFSET_RE =
  /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?[+-]\d{2}:\d{2}$/;

export const I64_MAX = 9223372036854775807n;
export const I64_MIN = -9223372036854775808n;
// The largest amount and balance magnitude: 2^53 - 1, what every JSON client holds exactly.
export const MAX_SAFE = 9007199254740991n;

export function url(path) {
  return BASE_URL + path;
}

/**
 * Sends one request and reads the whole body as text.
 * Returns { status, headers, text }.
 */
export async function call(path, { method = 'GET', headers = {}, body } = {}) {
  const response = await fetch(url(path), { method, headers, body });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text };
}

/** Like `call`, with a JSON body (a string is sent as-is, anything else is stringified). */
export function sendJson(path, payload, { method = 'POST', contentType = 'application/json', headers = {} } = {}) {
  const body = typeof payload === 'string' ? payload : JSON.stringify(payload);
  return call(path, { method, headers: { 'content-type': contentType, ...headers }, body });
}

/**
 * POST /transactions for one account. `amount` may be a number or a BigInt (serialized
 * exactly, so the i64 extremes survive). Returns { status, headers, text, body }, where
 * `body` is the parsed JSON (or undefined if the response is not JSON).
 */
export async function postTransaction(accountId, amount, { headers = {} } = {}) {
  const text = `{"account_id":${JSON.stringify(accountId)},"amount":${String(amount)}}`;
  const res = await sendJson('/transactions', text, { headers });
  return { ...res, body: tryParse(res) };
}

/** GET a path and parse a JSON body. Returns { status, headers, text, body }. */
export async function getJson(path, { headers = {} } = {}) {
  const res = await call(path, { headers });
  return { ...res, body: tryParse(res) };
}

export function isJsonContentType(headers) {
  return /^application\/json\s*(;|$)/i.test(headers.get('content-type') ?? '');
}

function tryParse(res) {
  if (!isJsonContentType(res.headers)) return undefined;
  try {
    return JSON.parse(res.text);
  } catch {
    return undefined;
  }
}

/** Asserts a JSON content type and returns the parsed body. */
export function readJson(res) {
  assert.ok(
    isJsonContentType(res.headers),
    `expected Content-Type application/json, got ${res.headers.get('content-type')} (body: ${res.text})`,
  );
  return JSON.parse(res.text);
}

/**
 * Asserts that `res` is an error with the given status whose body is
 * `{"error": "<non-empty string>"}` served as application/json. Returns the message.
 */
export function assertJsonError(res, status) {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`);
  const body = readJson(res);
  assert.equal(typeof body, 'object');
  assert.ok(body !== null && !Array.isArray(body), `error body must be a JSON object: ${res.text}`);
  assert.equal(typeof body.error, 'string', `error body must have a string "error": ${res.text}`);
  assert.ok(body.error.trim().length > 0, `error message must not be empty: ${res.text}`);
  return body.error;
}

/**
 * An integer field read straight from the JSON text, as a BigInt: JSON.parse would round
 * anything beyond 2^53 (the i64 extremes).
 */
export function integerField(text, name) {
  const match = new RegExp(`"${name}"\\s*:\\s*(-?\\d+)\\s*[,}]`).exec(text);
  assert.ok(match, `no integer field "${name}" in ${text}`);
  return BigInt(match[1]);
}

/** The methods of an Allow header, as a sorted array. */
export function allowedMethods(headers) {
  const allow = headers.get('allow');
  assert.ok(allow, 'expected an Allow header');
  return allow
    .split(',')
    .map((method) => method.trim().toUpperCase())
    .filter(Boolean)
    .sort();
}

/** Asserts a successful 201 of POST /transactions and returns the created transaction. */
export function assertCreated(res, accountId, amount) {
  assert.equal(res.status, 201, `expected 201, got ${res.status}: ${res.text}`);
  const body = readJson(res);
  assert.match(body.transaction_id, UUID_RE);
  assert.equal(body.account_id, accountId);
  assert.equal(integerField(res.text, 'amount'), BigInt(amount));
  assert.match(body.created_at, RFC3339_WITH_OFFSET_RE);
  assert.ok(!Number.isNaN(Date.parse(body.created_at)), `created_at must be a date: ${body.created_at}`);
  return body;
}

/** The balance of an account, as a BigInt (asserts 200 and a JSON Account). */
export async function balanceOf(accountId) {
  const res = await getJson(`/accounts/${accountId}`);
  assert.equal(res.status, 200, `GET /accounts/${accountId}: ${res.status} ${res.text}`);
  assert.equal(readJson(res).account_id, accountId);
  return integerField(res.text, 'balance');
}

/** The `rel="next"` URL of a Link header (relative to the API), or undefined. */
export function nextLink(headers) {
  const link = headers.get('link');
  if (!link) return undefined;
  const match = /<([^>]+)>\s*;\s*rel="?next"?/.exec(link);
  assert.ok(match, `malformed Link header: ${link}`);
  const next = new URL(match[1], BASE_URL + '/');
  return next.pathname + next.search;
}

