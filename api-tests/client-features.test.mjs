// What API clients get beyond the contract (issue 7), through the proxy: the OpenAPI document
// and the running services agreeing with it, CORS, filtering and keyset paging of
// GET /transactions, Location on 201, ETag / If-None-Match, and Idempotency-Key retries.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import {
  BASE_URL,
  UUID_RE,
  RFC3339_WITH_OFFSET_RE,
  I64_MAX,
  assertCreated,
  assertJsonError,
  allowedMethods,
  balanceOf,
  call,
  getJson,
  integerField,
  postTransaction,
  randomUUID,
  readJson,
  sendJson,
} from './helpers.mjs';

/** The paths every service answers (shared/src/http.rs PUBLIC_ROUTES), with their methods. */
const PUBLIC_ROUTES = {
  '/ping': ['GET', 'HEAD'],
  '/openapi.json': ['GET', 'HEAD'],
  '/transactions': ['GET', 'HEAD', 'POST'],
  '/transactions/{transaction_id}': ['GET', 'HEAD'],
  '/accounts/{account_id}': ['GET', 'HEAD'],
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

const JSON_HEADERS = { 'content-type': 'application/json' };

function bodyOf(accountId, amount) {
  return `{"account_id":${JSON.stringify(accountId)},"amount":${String(amount)}}`;
}

/** The `rel="next"` URL of a Link header (relative to the API), or undefined. */
function nextLink(headers) {
  const link = headers.get('link');
  if (!link) return undefined;
  const match = /<([^>]+)>\s*;\s*rel="?next"?/.exec(link);
  assert.ok(match, `malformed Link header: ${link}`);
  const next = new URL(match[1], BASE_URL + '/');
  return next.pathname + next.search;
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
    await post('', { expect: 400 });
    await post('[1]', { expect: 400 });
    await post('{bad', { expect: 400 });
    await post(bodyOf(accountId, 1), { headers: { 'idempotency-key': 'k'.repeat(256) }, expect: 400 });
    await post(bodyOf(accountId, 1), { contentType: 'application/xml', expect: 415 });
    await post(JSON.stringify({ account_id: accountId, amount: 1, padding: 'x'.repeat(17 * 1024) }), { expect: 413 });
    const big = randomUUID();
    await post(bodyOf(big, I64_MAX), { expect: 201 });
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

describe('CORS through the proxy', () => {
  const origin = process.env.CORS_TEST_ORIGIN ?? 'https://app.example.com';
  const listOf = (value) => (value ?? '').split(',').map((item) => item.trim().toLowerCase()).filter(Boolean);
  const assertOriginAllowed = (res, what) => {
    const allowed = res.headers.get('access-control-allow-origin');
    assert.ok(allowed === '*' || allowed === origin, `${what}: Access-Control-Allow-Origin is ${allowed}`);
  };

  test('the preflight of POST /transactions with Content-Type and Idempotency-Key is allowed', async () => {
    const res = await call('/transactions', {
      method: 'OPTIONS',
      headers: {
        origin,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type, idempotency-key',
      },
    });
    assert.ok(res.status >= 200 && res.status < 300, `preflight: ${res.status} ${res.text}`);
    assertOriginAllowed(res, 'preflight');
    const methods = listOf(res.headers.get('access-control-allow-methods'));
    assert.ok(methods.includes('post') || methods.includes('*'), `Access-Control-Allow-Methods: ${methods}`);
    const headers = listOf(res.headers.get('access-control-allow-headers'));
    for (const header of ['content-type', 'idempotency-key']) {
      assert.ok(headers.includes(header) || headers.includes('*'), `Access-Control-Allow-Headers lacks ${header}: ${headers}`);
    }
  });

  test('the preflight of a conditional GET allows If-None-Match', async () => {
    const res = await call(`/accounts/${randomUUID()}`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'if-none-match' },
    });
    assert.ok(res.status >= 200 && res.status < 300, `preflight: ${res.status} ${res.text}`);
    assertOriginAllowed(res, 'preflight');
    const headers = listOf(res.headers.get('access-control-allow-headers'));
    assert.ok(headers.includes('if-none-match') || headers.includes('*'), `Access-Control-Allow-Headers: ${headers}`);
  });

  test('a simple GET with Origin is allowed, and Location, ETag and Link are exposed to scripts', async () => {
    const res = await call('/ping', { headers: { origin } });
    assert.equal(res.status, 200);
    assertOriginAllowed(res, 'GET /ping');
    const exposed = listOf(res.headers.get('access-control-expose-headers'));
    for (const header of ['location', 'etag', 'link']) {
      assert.ok(exposed.includes(header), `Access-Control-Expose-Headers lacks ${header}: ${exposed}`);
    }
  });

  test('a cross-origin POST gets Access-Control-Allow-Origin and can read Location', async () => {
    const accountId = randomUUID();
    const res = await postTransaction(accountId, 2, { headers: { origin } });
    assertCreated(res, accountId, 2);
    assertOriginAllowed(res, 'POST /transactions');
    assert.ok(listOf(res.headers.get('access-control-expose-headers')).includes('location'));
  });

  test('errors carry the CORS headers too, so a browser client can read them', async () => {
    const res = await call('/accounts/not-a-uuid', { headers: { origin } });
    assertJsonError(res, 400);
    assertOriginAllowed(res, 'GET /accounts/not-a-uuid');
  });
});

// --- Location ---------------------------------------------------------------------------------

describe('Location on 201', () => {
  test('201 Created has Location: /transactions/{id}, and following it gives the transaction', async () => {
    const accountId = randomUUID();
    const res = await postTransaction(accountId, 41);
    const created = assertCreated(res, accountId, 41);
    const location = res.headers.get('location');
    assert.equal(location, `/transactions/${created.transaction_id}`);
    const followed = await getJson(new URL(location, BASE_URL + '/').pathname);
    assert.equal(followed.status, 200, followed.text);
    assert.deepEqual(readJson(followed), created);
  });
});

// --- filtering and paging -------------------------------------------------------------------

/** Creates `count` transactions on one account, one after the other; returns them oldest first. */
async function createMany(accountId, count, firstAmount = 1) {
  const created = [];
  for (let i = 0; i < count; i += 1) {
    created.push(assertCreated(await postTransaction(accountId, firstAmount + i), accountId, firstAmount + i));
  }
  return created;
}

describe('GET /transactions filtering and paging', () => {
  test('account_id returns exactly that account\'s transactions, newest first', async () => {
    const accountId = randomUUID();
    const other = randomUUID();
    const mine = [];
    for (let i = 0; i < 4; i += 1) {
      mine.push(assertCreated(await postTransaction(accountId, 10 + i), accountId, 10 + i));
      assertCreated(await postTransaction(other, 1), other, 1);
    }
    const res = await getJson(`/transactions?account_id=${accountId}`);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers.get('link'), null, 'no Link without limit');
    const list = readJson(res);
    assert.deepEqual(list, [...mine].reverse());
    for (let i = 1; i < list.length; i += 1) {
      assert.ok(Date.parse(list[i - 1].created_at) >= Date.parse(list[i].created_at), 'newest first');
    }
  });

  test('an account id in another textual form selects the same account', async () => {
    const accountId = randomUUID();
    const created = assertCreated(await postTransaction(accountId, 5), accountId, 5);
    const list = readJson(await getJson(`/transactions?account_id=${accountId.toUpperCase()}`));
    assert.deepEqual(list, [created]);
  });

  test('an account without transactions gives an empty array', async () => {
    const res = await getJson(`/transactions?account_id=${randomUUID()}`);
    assert.equal(res.status, 200);
    assert.deepEqual(readJson(res), []);
  });

  test('limit with Link rel=next walks every transaction of an account exactly once, even with inserts between pages', async () => {
    const accountId = randomUUID();
    const original = await createMany(accountId, 7, 100);
    const insertedWhilePaging = [];
    const seen = [];
    let next = `/transactions?account_id=${accountId}&limit=3`;
    let pages = 0;
    while (next) {
      const res = await getJson(next);
      assert.equal(res.status, 200, `${next}: ${res.text}`);
      const page = readJson(res);
      assert.ok(page.length <= 3, `page of ${page.length} with limit=3`);
      assert.ok(page.every((item) => item.account_id === accountId), 'only the account\'s transactions');
      seen.push(...page);
      next = nextLink(res.headers);
      if (next) {
        assert.match(next, /[?&]limit=3(&|$)/, 'the next page keeps the limit');
        assert.match(next, new RegExp(`[?&]account_id=${accountId}(&|$)`, 'i'), 'the next page keeps the filter');
      }
      pages += 1;
      assert.ok(pages <= 10, 'paging must end');
      // A concurrent writer: new transactions of the same account between pages.
      const amount = 900 + pages;
      insertedWhilePaging.push(assertCreated(await postTransaction(accountId, amount), accountId, amount));
    }
    assert.equal(pages, 3, '7 transactions in pages of 3');
    assert.deepEqual(seen, [...original].reverse(), 'every original transaction once, newest first');
    const ids = new Set(seen.map((item) => item.transaction_id));
    assert.equal(ids.size, seen.length, 'no transaction twice');
    for (const inserted of insertedWhilePaging) {
      assert.ok(!ids.has(inserted.transaction_id), 'transactions recorded after the first page do not shift later pages');
    }
    // A new listing starts with them.
    const fresh = readJson(await getJson(`/transactions?account_id=${accountId}&limit=${insertedWhilePaging.length}`));
    assert.deepEqual(fresh, [...insertedWhilePaging].reverse());
  });

  test('an exact last page has no Link, and limit without account_id pages the whole list', async () => {
    const accountId = randomUUID();
    await createMany(accountId, 2);
    const res = await getJson(`/transactions?account_id=${accountId}&limit=2`);
    assert.equal(res.status, 200);
    assert.equal(readJson(res).length, 2);
    assert.equal(res.headers.get('link'), null, 'no next page');

    const first = await getJson('/transactions?limit=2');
    assert.equal(first.status, 200);
    const firstPage = readJson(first);
    assert.equal(firstPage.length, 2);
    const next = nextLink(first.headers);
    assert.ok(next, 'there are more than 2 transactions in all');
    assert.doesNotMatch(next, /account_id/);
    const second = readJson(await getJson(next));
    assert.ok(second.length > 0);
    const overlap = second.filter((item) => firstPage.some((seen) => seen.transaction_id === item.transaction_id));
    assert.deepEqual(overlap, [], 'pages do not overlap');
  });

  describe('invalid parameters give 400 with a JSON error', () => {
    for (const query of [
      'limit=0',
      'limit=1001',
      'limit=-1',
      'limit=abc',
      'limit=1.5',
      'limit=',
      'after=garbage',
      'after=c0',
      'after=c-5',
      'after=',
      'account_id=bad',
      'account_id=',
      'limit=1&limit=2',
    ]) {
      test(`GET /transactions?${query}`, async () => {
        const message = assertJsonError(await call(`/transactions?${query}`), 400);
        const named = query.startsWith('limit=1&') ? /query string/ : new RegExp(query.split('=')[0]);
        assert.match(message, named, 'the message names the parameter');
      });
    }
  });

  test('limit=1000 is accepted', async () => {
    const res = await getJson('/transactions?limit=1000');
    assert.equal(res.status, 200);
    assert.ok(readJson(res).length <= 1000);
  });

  test('plain GET /transactions still returns every transaction, including those just created', async () => {
    const accountId = randomUUID();
    const created = await createMany(accountId, 3);
    const res = await getJson('/transactions');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('link'), null, 'no Link without limit');
    const list = readJson(res);
    for (const transaction of created) {
      assert.equal(list.filter((item) => item.transaction_id === transaction.transaction_id).length, 1);
    }
  });
});

// --- conditional reads ------------------------------------------------------------------------

describe('ETag and If-None-Match', () => {
  test('an account read has an ETag; If-None-Match with it gives 304 without a body until the next write', async () => {
    const accountId = randomUUID();
    assertCreated(await postTransaction(accountId, 10), accountId, 10);
    const first = await getJson(`/accounts/${accountId}`);
    assert.equal(first.status, 200);
    const etag = first.headers.get('etag');
    assert.match(etag ?? '', /^(W\/)?"[^"]+"$/, `ETag: ${etag}`);

    const again = await call(`/accounts/${accountId}`);
    assert.equal(again.headers.get('etag'), etag, 'the same representation has the same tag');

    const cached = await call(`/accounts/${accountId}`, { headers: { 'if-none-match': etag } });
    assert.equal(cached.status, 304, cached.text);
    assert.equal(cached.text, '', '304 has no body');
    assert.equal(cached.headers.get('etag'), etag);

    assert.equal((await call(`/accounts/${accountId}`, { headers: { 'if-none-match': '"other", ' + etag } })).status, 304);
    assert.equal((await call(`/accounts/${accountId}`, { headers: { 'if-none-match': '"other"' } })).status, 200);

    assertCreated(await postTransaction(accountId, 5), accountId, 5);
    const changed = await getJson(`/accounts/${accountId}`, { headers: { 'if-none-match': etag } });
    assert.equal(changed.status, 200, 'the old tag no longer matches after a write');
    assert.equal(integerField(changed.text, 'balance'), 15n);
    assert.notEqual(changed.headers.get('etag'), etag);
    assert.equal((await call(`/accounts/${accountId}`, { headers: { 'if-none-match': changed.headers.get('etag') } })).status, 304);
  });

  test('a transaction read has an ETag; If-None-Match with it gives 304 without a body', async () => {
    const accountId = randomUUID();
    const created = assertCreated(await postTransaction(accountId, 3), accountId, 3);
    const path = `/transactions/${created.transaction_id}`;
    const first = await getJson(path);
    assert.equal(first.status, 200);
    assert.deepEqual(readJson(first), created);
    const etag = first.headers.get('etag');
    assert.match(etag ?? '', /^(W\/)?"[^"]+"$/, `GET ${path} must carry an ETag, got ${etag}`);
    const cached = await call(path, { headers: { 'if-none-match': etag } });
    assert.equal(cached.status, 304, cached.text);
    assert.equal(cached.text, '');
    assert.equal(cached.headers.get('etag'), etag);
  });

  test('If-None-Match on a missing account still gives 404', async () => {
    assertJsonError(await call(`/accounts/${randomUUID()}`, { headers: { 'if-none-match': '*' } }), 404);
  });
});

// --- Idempotency-Key --------------------------------------------------------------------------

describe('Idempotency-Key through the proxy', () => {
  test('the same key with the same body returns the same transaction once, marked as replayed', async () => {
    const accountId = randomUUID();
    const headers = { 'idempotency-key': `client-test-${randomUUID()}` };
    const first = await postTransaction(accountId, 25, { headers });
    const original = assertCreated(first, accountId, 25);
    assert.equal(first.headers.get('idempotent-replayed'), null, 'the first request is not a replay');

    const retry = await postTransaction(accountId, 25, { headers });
    assert.deepEqual(assertCreated(retry, accountId, 25), original, 'same transaction_id, same body');
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    assert.equal(retry.headers.get('location'), `/transactions/${original.transaction_id}`);

    assert.equal(await balanceOf(accountId), 25n, 'applied once');
    assert.deepEqual(readJson(await getJson(`/transactions?account_id=${accountId}`)), [original]);
  });

  test('concurrent retries with one key apply it once', async () => {
    const accountId = randomUUID();
    const headers = { 'idempotency-key': `client-test-${randomUUID()}` };
    const results = await Promise.all(Array.from({ length: 6 }, () => postTransaction(accountId, 9, { headers })));
    const ids = new Set(results.map((res) => assertCreated(res, accountId, 9).transaction_id));
    assert.equal(ids.size, 1, 'every answer names the same transaction');
    assert.equal(results.filter((res) => res.headers.get('idempotent-replayed') === null).length, 1, 'one original');
    assert.equal(await balanceOf(accountId), 9n);
  });

  test('the same key with a different body is refused with 422 and records nothing', async () => {
    const accountId = randomUUID();
    const headers = { 'idempotency-key': `client-test-${randomUUID()}` };
    assertCreated(await postTransaction(accountId, 4, { headers }), accountId, 4);
    assertJsonError(await postTransaction(accountId, 5, { headers }), 422);
    const otherAccount = randomUUID();
    assertJsonError(await postTransaction(otherAccount, 4, { headers }), 422);
    assert.equal(await balanceOf(accountId), 4n);
    assertJsonError(await call(`/accounts/${otherAccount}`), 404);
  });

  test('an invalid key is refused with 400 and records nothing', async () => {
    const accountId = randomUUID();
    for (const key of ['k'.repeat(256), 'é', ' ']) {
      const message = assertJsonError(await postTransaction(accountId, 1, { headers: { 'idempotency-key': key } }), 400);
      assert.match(message, /Idempotency-Key/);
    }
    assertJsonError(await call(`/accounts/${accountId}`), 404);
  });

  test('a key of 255 printable characters is accepted', async () => {
    const accountId = randomUUID();
    const key = `${randomUUID()} ~!`.padEnd(255, 'k');
    assertCreated(await postTransaction(accountId, 1, { headers: { 'idempotency-key': key } }), accountId, 1);
    assert.equal((await postTransaction(accountId, 1, { headers: { 'idempotency-key': key } })).headers.get('idempotent-replayed'), 'true');
    assert.equal(await balanceOf(accountId), 1n);
  });

  test('without a key, the same request twice records two transactions', async () => {
    const accountId = randomUUID();
    const first = assertCreated(await postTransaction(accountId, 6), accountId, 6);
    const second = assertCreated(await postTransaction(accountId, 6), accountId, 6);
    assert.notEqual(first.transaction_id, second.transaction_id);
    assert.equal(await balanceOf(accountId), 12n);
  });
});
