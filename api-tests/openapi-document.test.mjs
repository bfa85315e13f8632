// The OpenAPI document (reader/openapi.json) through the proxy, and the running services
// agreeing with it: every public path and method, every response's status, headers and body.
// (Split from client-features.test.mjs, which covers what clients get beyond the contract.)

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import {
  UUID_RE,
  RFC3339_WITH_OFFSET_RE,
  MAX_SAFE,
  assertJsonError,
  allowedMethods,
  call,
  randomUUID,
  readJson,
  sendJson,
  nextLink,
} from './helpers.mjs';

/** The paths every service answers (PUBLIC_ROUTES in shared/src/http/routes.rs), with their methods. */
const PUBLIC_ROUTES = {
  '/ping': ['GET', 'HEAD'],
  '/openapi.json': ['GET', 'HEAD'],
  '/transactions': ['GET', 'HEAD', 'POST'],
  '/transactions/{transaction_id}': ['GET', 'HEAD'],
  '/accounts/{account_id}': ['GET', 'HEAD'],
  '/events': ['GET', 'HEAD'],
  '/accounts/{account_id}/events': ['GET', 'HEAD'],
};

const HTTP_METHODS = ['get', 'head', 'post', 'put', 'patch', 'delete', 'options', 'trace'];

// --- a small JSON Schema validator -------------------------------------------------------
// Enough for what reader/openapi.json uses: $ref (inside the document), type, required,
// properties, additionalProperties (boolean), items, enum, format (uuid, date-time),
// minLength, maxLength, pattern, minimum, maximum.

/** Follows a local `$ref` ("#/components/...") until it reaches something that is not one. */
function deref(doc, node) {
  let current = node;
  for (let hops = 0; current && typeof current === 'object' && '$ref' in current; hops += 1) {
    assert.ok(hops < 20, `$ref loop at ${current.$ref}`);
    assert.ok(current.$ref.startsWith('#/'), `only local $ref are supported: ${current.$ref}`);
    current = current.$ref
      .slice(2)
      .split('/')
      .map((part) => part.replaceAll('~1', '/').replaceAll('~0', '~'))
      .reduce((into, part) => {
        assert.ok(into && part in into, `unresolvable $ref ${node.$ref}`);
        return into[part];
      }, doc);
  }
  return current;
}

function typeOf(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

const FORMATS = {
  uuid: (value) => UUID_RE.test(value),
  'date-time': (value) => RFC3339_WITH_OFFSET_RE.test(value) || /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.test(value),
};

/** The problems of `value` against `schema`, as "where: what" strings (empty: valid). */
function validate(doc, schema, value, where = '$') {
  const s = deref(doc, schema);
  const problems = [];
  if (s === undefined || s === true || (typeof s === 'object' && Object.keys(s).length === 0)) return problems;
  const actual = typeOf(value);
  if (s.type !== undefined) {
    const fits = s.type === actual || (s.type === 'number' && actual === 'integer') || (s.nullable && actual === 'null');
    if (!fits) return [`${where}: expected ${s.type}, got ${actual} (${JSON.stringify(value)?.slice(0, 80)})`];
  }
  if (s.enum && !s.enum.some((allowed) => JSON.stringify(allowed) === JSON.stringify(value))) {
    problems.push(`${where}: ${JSON.stringify(value)} is not one of ${JSON.stringify(s.enum)}`);
  }
  if (actual === 'string') {
    if (s.format && FORMATS[s.format] && !FORMATS[s.format](value)) problems.push(`${where}: "${value}" is not a ${s.format}`);
    if (s.minLength !== undefined && value.length < s.minLength) problems.push(`${where}: shorter than ${s.minLength}`);
    if (s.maxLength !== undefined && value.length > s.maxLength) problems.push(`${where}: longer than ${s.maxLength}`);
    if (s.pattern && !new RegExp(s.pattern, 'u').test(value)) problems.push(`${where}: "${value}" does not match ${s.pattern}`);
  }
  if (actual === 'integer' || actual === 'number') {
    if (s.minimum !== undefined && value < s.minimum) problems.push(`${where}: ${value} < ${s.minimum}`);
    if (s.maximum !== undefined && value > s.maximum) problems.push(`${where}: ${value} > ${s.maximum}`);
  }
  if (actual === 'object') {
    for (const name of s.required ?? []) {
      if (!(name in value)) problems.push(`${where}: missing required property "${name}"`);
    }
    const properties = s.properties ?? {};
    for (const [name, item] of Object.entries(value)) {
      if (name in properties) problems.push(...validate(doc, properties[name], item, `${where}.${name}`));
      else if (s.additionalProperties === false) problems.push(`${where}: unexpected property "${name}"`);
      else if (typeof s.additionalProperties === 'object') {
        problems.push(...validate(doc, s.additionalProperties, item, `${where}.${name}`));
      }
    }
  }
  if (actual === 'array' && s.items) {
    value.forEach((item, index) => {
      if (problems.length < 20) problems.push(...validate(doc, s.items, item, `${where}[${index}]`));
    });
  }
  return problems;
}

// --- checking a response against the document --------------------------------------------

/** The OpenAPI document as served through the proxy (fetched once). */
let served;
async function openapi() {
  if (!served) {
    const res = await call('/openapi.json');
    assert.equal(res.status, 200, `GET /openapi.json: ${res.status} ${res.text.slice(0, 200)}`);
    served = readJson(res);
  }
  return served;
}

/**
 * Asserts that `res` is what the document promises for a documented response object: every
 * required header is there and matches its schema, and the body is of a documented media type
 * and valid against its schema (or absent when none is documented, and always for HEAD).
 */
function assertMatchesResponse(doc, responseNode, res, what, method) {
  const response = deref(doc, responseNode);
  for (const [name, headerNode] of Object.entries(response.headers ?? {})) {
    const header = deref(doc, headerNode);
    const value = res.headers.get(name);
    if (value === null) {
      assert.ok(!header.required, `${what}: the documented header ${name} is required but missing`);
      continue;
    }
    const schema = deref(doc, header.schema ?? {});
    const typed = schema.type === 'integer' && /^-?\d+$/.test(value) ? Number(value) : value;
    const problems = validate(doc, schema, typed, `header ${name}`);
    assert.deepEqual(problems, [], `${what}: header ${name}: ${value}`);
  }
  const content = response.content ?? {};
  if (method === 'HEAD' || Object.keys(content).length === 0) {
    assert.equal(res.text, '', `${what}: no body is documented, got ${res.text.slice(0, 200)}`);
    return;
  }
  const contentType = (res.headers.get('content-type') ?? '').split(';')[0].trim().toLowerCase();
  assert.ok(contentType in content, `${what}: Content-Type ${contentType} is not documented (${Object.keys(content)})`);
  let body;
  assert.doesNotThrow(() => { body = JSON.parse(res.text); }, `${what}: the body is not JSON: ${res.text.slice(0, 200)}`);
  const problems = validate(doc, content[contentType].schema, body);
  assert.deepEqual(problems, [], `${what}: the body does not match the documented schema: ${res.text.slice(0, 300)}`);
}

/** Asserts that the document has `method template` and that `res` is one of its documented responses. */
function assertConforms(doc, method, template, res) {
  const what = `${method} ${template} → ${res.status}`;
  const operation = doc.paths[template]?.[method.toLowerCase()];
  assert.ok(operation, `${method} ${template} is not in the document`);
  const responseNode = operation.responses[String(res.status)] ?? operation.responses.default;
  assert.ok(responseNode, `${what}: status ${res.status} is not documented for this operation (body: ${res.text.slice(0, 200)})`);
  assertMatchesResponse(doc, responseNode, res, what, method);
}

/** Sends a request described by [method, template, concrete path, options] and checks it. */
async function checkAgainstDocument(doc, method, template, path, { headers = {}, body, expect } = {}) {
  const res = await call(path, { method, headers, body });
  if (expect !== undefined) {
    assert.equal(res.status, expect, `${method} ${path}: expected ${expect}, got ${res.status}: ${res.text.slice(0, 200)}`);
  }
  assertConforms(doc, method, template, res);
  return res;
}

function bodyOf(accountId, amount) {
  return `{"account_id":${JSON.stringify(accountId)},"amount":${String(amount)}}`;
}

// --- the document -------------------------------------------------------------------------

describe('OpenAPI document', () => {
  test('GET /openapi.json through the proxy is an OpenAPI 3 document of every public path', async () => {
    const res = await call('/openapi.json');
    assert.equal(res.status, 200, res.text.slice(0, 200));
    const doc = readJson(res);
    assert.match(doc.openapi, /^3\.\d+\.\d+$/);
    assert.equal(typeof doc.info?.title, 'string');
    assert.equal(typeof doc.info?.version, 'string');
    assert.deepEqual(Object.keys(doc.paths).sort(), Object.keys(PUBLIC_ROUTES).sort());
    for (const [path, methods] of Object.entries(PUBLIC_ROUTES)) {
      const documented = Object.keys(doc.paths[path])
        .filter((key) => HTTP_METHODS.includes(key))
        .map((key) => key.toUpperCase())
        .sort();
      assert.deepEqual(documented, methods, `methods of ${path}`);
    }
    for (const name of ['Transaction', 'Account', 'Error']) {
      assert.ok(doc.components?.schemas?.[name], `components.schemas.${name} is missing`);
    }
  });

  test('the document served is the one in the repository (reader/openapi.json)', async () => {
    const inRepo = JSON.parse(await readFile(new URL('../reader/openapi.json', import.meta.url), 'utf8'));
    assert.deepEqual(await openapi(), inRepo, 'rebuild and restart the reader: bash scripts/stack.sh start');
  });

  test('every $ref resolves, every operation documents its responses with examples', async () => {
    const doc = await openapi();
    const walk = (node, where) => {
      if (Array.isArray(node)) node.forEach((item, i) => walk(item, `${where}[${i}]`));
      else if (node && typeof node === 'object') {
        if (typeof node.$ref === 'string') deref(doc, node);
        for (const [key, value] of Object.entries(node)) walk(value, `${where}.${key}`);
      }
    };
    walk(doc, '$');
    const ids = new Set();
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(item)) {
        if (!HTTP_METHODS.includes(method)) continue;
        const label = `${method.toUpperCase()} ${path}`;
        assert.ok(operation.operationId && !ids.has(operation.operationId), `${label}: unique operationId`);
        ids.add(operation.operationId);
        for (const [status, responseNode] of Object.entries(operation.responses)) {
          const response = deref(doc, responseNode);
          assert.ok(response.description, `${label} ${status}: description`);
          for (const [mediaType, media] of Object.entries(response.content ?? {})) {
            const examples = Object.values(media.examples ?? {});
            assert.ok(examples.length > 0 || media.example !== undefined, `${label} ${status} ${mediaType}: examples`);
            for (const example of examples) {
              assert.deepEqual(validate(doc, media.schema, example.value), [], `${label} ${status}: example ${example.summary}`);
            }
          }
        }
        if (operation.requestBody) {
          const media = deref(doc, operation.requestBody).content['application/json'];
          assert.ok(Object.keys(media.examples ?? {}).length > 0, `${label}: request examples`);
        }
      }
    }
  });

  test('each path answers methods it does not have with 405 and exactly the documented methods in Allow', async () => {
    const doc = await openapi();
    const concrete = (template) => template
      .replace('{transaction_id}', randomUUID())
      .replace('{account_id}', randomUUID());
    for (const template of Object.keys(doc.paths)) {
      const documented = Object.keys(doc.paths[template])
        .filter((key) => HTTP_METHODS.includes(key))
        .map((key) => key.toUpperCase())
        .sort();
      for (const method of ['PUT', 'PATCH', 'DELETE', 'POST'].filter((m) => !documented.includes(m))) {
        const res = await sendJson(concrete(template), { account_id: randomUUID(), amount: 1 }, { method });
        assertJsonError(res, 405);
        assert.deepEqual(allowedMethods(res.headers), documented, `${method} ${template}: Allow`);
        assertMatchesResponse(doc, doc.components.responses.MethodNotAllowed, res, `${method} ${template}`, method);
      }
    }
  });

  test('the running services answer real requests as the document says (status, headers, body schema)', async () => {
    const doc = await openapi();
    const accountId = randomUUID();
    const fresh = randomUUID();
    const key = `conformance-${randomUUID()}`;
    const check = (method, template, path, options) => checkAgainstDocument(doc, method, template, path, options);

    // Service endpoints.
    await check('GET', '/ping', '/ping', { expect: 200 });
    await check('HEAD', '/ping', '/ping', { expect: 200 });
    await check('GET', '/openapi.json', '/openapi.json', { expect: 200 });
    await check('HEAD', '/openapi.json', '/openapi.json', { expect: 200 });

    // POST /transactions: success, replay and every error the services produce.
    const post = (body, { headers = {}, contentType = 'application/json', expect } = {}) =>
      check('POST', '/transactions', '/transactions', { headers: { 'content-type': contentType, ...headers }, body, expect });
    const created = readJson(await post(bodyOf(accountId, 7), { headers: { 'idempotency-key': key }, expect: 201 }));
    await post(bodyOf(accountId, 7), { headers: { 'idempotency-key': key }, expect: 201 });
    await post(bodyOf(accountId, -4), { expect: 201 });
    await post(bodyOf(accountId, 8), { headers: { 'idempotency-key': key }, expect: 422 });
    await post('{"amount":1}', { expect: 400 });
    await post(`{"account_id":"${accountId}"}`, { expect: 400 });
    await post('{"account_id":10,"amount":1}', { expect: 400 });
    await post(bodyOf(accountId, 1.5), { expect: 400 });
    await post(bodyOf(accountId, '9223372036854775808'), { expect: 400 });
    await post(bodyOf(accountId, '9007199254740992'), { expect: 400 });
    await post(`{"account_id":"${accountId}","amount":1,"amount":2}`, { expect: 400 });
    await post('', { expect: 400 });
    await post('[1]', { expect: 400 });
    await post('{bad', { expect: 400 });
    await post(bodyOf(accountId, 1), { headers: { 'idempotency-key': 'k'.repeat(256) }, expect: 400 });
    await post(bodyOf(accountId, 1), { contentType: 'application/xml', expect: 415 });
    await post(JSON.stringify({ account_id: accountId, amount: 1, padding: 'x'.repeat(17 * 1024) }), { expect: 413 });
    const big = randomUUID();
    await post(bodyOf(big, MAX_SAFE), { expect: 201 });
    await post(bodyOf(big, 1), { expect: 422 });

    // GET /transactions: lists, pages and refused parameters.
    await check('GET', '/transactions', '/transactions', { expect: 200 });
    await check('GET', '/transactions', `/transactions?account_id=${accountId}`, { expect: 200 });
    await check('GET', '/transactions', `/transactions?account_id=${fresh}`, { expect: 200 });
    const page = await check('GET', '/transactions', `/transactions?account_id=${accountId}&limit=1`, { expect: 200 });
    await check('GET', '/transactions', nextLink(page.headers), { expect: 200 });
    await check('HEAD', '/transactions', `/transactions?account_id=${accountId}&limit=1`, { expect: 200 });
    for (const query of ['limit=0', 'limit=1001', 'limit=abc', 'after=garbage', 'account_id=bad', 'limit=1&limit=2']) {
      await check('GET', '/transactions', `/transactions?${query}`, { expect: 400 });
    }
    await check('HEAD', '/transactions', '/transactions?limit=0', { expect: 400 });

    // GET /transactions/{transaction_id}.
    const txPath = `/transactions/${created.transaction_id}`;
    const tx = await check('GET', '/transactions/{transaction_id}', txPath, { expect: 200 });
    const txTag = tx.headers.get('etag');
    if (txTag) await check('GET', '/transactions/{transaction_id}', txPath, { headers: { 'if-none-match': txTag }, expect: 304 });
    await check('HEAD', '/transactions/{transaction_id}', txPath, { expect: 200 });
    await check('GET', '/transactions/{transaction_id}', '/transactions/123', { expect: 400 });
    await check('GET', '/transactions/{transaction_id}', `/transactions/${randomUUID()}`, { expect: 404 });
    await check('HEAD', '/transactions/{transaction_id}', `/transactions/${randomUUID()}`, { expect: 404 });

    // GET /accounts/{account_id}.
    const accountPath = `/accounts/${accountId}`;
    const account = await check('GET', '/accounts/{account_id}', accountPath, { expect: 200 });
    const accountTag = account.headers.get('etag');
    await check('GET', '/accounts/{account_id}', accountPath, { headers: { 'if-none-match': accountTag }, expect: 304 });
    await check('HEAD', '/accounts/{account_id}', accountPath, { headers: { 'if-none-match': accountTag }, expect: 304 });
    await check('HEAD', '/accounts/{account_id}', accountPath, { expect: 200 });
    await check('GET', '/accounts/{account_id}', '/accounts/not-a-uuid', { expect: 400 });
    await check('GET', '/accounts/{account_id}', `/accounts/${fresh}`, { expect: 404 });
    await check('HEAD', '/accounts/{account_id}', '/accounts/not-a-uuid', { expect: 400 });

    // A path that is not part of the API: 404 with the documented error body.
    const unknown = await call('/nope');
    assertJsonError(unknown, 404);
    assert.deepEqual(validate(doc, doc.components.schemas.Error, JSON.parse(unknown.text)), []);
  });
});

// --- CORS -------------------------------------------------------------------------------------
