// HTTP through nginx: one request that never throws, how to classify an answer, and raw
// HTTP/1.1 over a socket for what fetch refuses to send.

import net from 'node:net';
import { API, PORTS } from './config.mjs';

// --- HTTP ----------------------------------------------------------------------------------

// Where request() goes by default: the fault-test stack's nginx, unless a suite of another
// stack (tests/ha/topology.test.mjs: the replicated topology) points it at its own with useApi.
let apiBase = API;
export function useApi(base) {
  apiBase = base;
}

/**
 * One request through nginx (or `base`). Never throws: a network failure or timeout is
 * status 0 with `error`. Returns { status, ms, text, json, retryAfter, contentType, replayed, error }.
 */
export async function request(method, pathname, { body, headers = {}, timeoutMs = 20_000, base = apiBase } = {}) {
  const started = performance.now();
  try {
    const res = await fetch(base + pathname, {
      method,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      body,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    const contentType = res.headers.get('content-type') ?? '';
    let json;
    if (/^application\/json\s*(;|$)/i.test(contentType)) {
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
    }
    return {
      status: res.status,
      ms: performance.now() - started,
      text,
      json,
      contentType,
      retryAfter: res.headers.get('retry-after'),
      replayed: res.headers.get('idempotent-replayed') === 'true',
    };
  } catch (error) {
    return { status: 0, ms: performance.now() - started, text: '', error: `${error.name}: ${error.cause?.code ?? error.message}` };
  }
}

/** A 503 as documented: JSON `{"error": "…"}` and a Retry-After of whole seconds. */
export function isDocumented503(res) {
  return (
    res.status === 503 &&
    res.json !== undefined &&
    typeof res.json?.error === 'string' &&
    res.json.error.length > 0 &&
    typeof res.retryAfter === 'string' &&
    /^\d+$/.test(res.retryAfter.trim())
  );
}

/**
 * The classification of an "unavailable, retry later" answer, or undefined if it is not one.
 * Only the documented 503 counts: a 502 or 504 (what nginx said before 65fb433 fixed its
 * `error_page 502 503 504 =503`) is unexpected.
 */
export function unavailableClass(res) {
  return isDocumented503(res) ? 'documented-503' : undefined;
}

/** A "retry later" answer a client must handle. */
export function isRetryLater(res) {
  return unavailableClass(res) !== undefined;
}

/** A 4xx whose body is a JSON error object. */
export function isJsonError(res, statuses) {
  return (
    statuses.includes(res.status) &&
    res.json !== undefined &&
    typeof res.json?.error === 'string' &&
    res.json.error.length > 0
  );
}

export function describeResponse(res) {
  return `${res.status}${res.error ? ` (${res.error})` : ''} ${res.text?.slice(0, 200) ?? ''}${res.retryAfter ? ` [Retry-After ${res.retryAfter}]` : ''}`;
}

// --- raw HTTP/1.1 over a socket (what fetch refuses to send) ----------------------------------

/** Parses one HTTP/1.1 response (head, then a chunked or plain body up to the end). */
export function parseHttpResponse(raw) {
  const headEnd = raw.indexOf('\r\n\r\n');
  if (headEnd < 0) return { status: 0, headers: {}, body: Buffer.alloc(0), complete: false, text: '' };
  const head = raw.subarray(0, headEnd).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0])?.[1] ?? 0);
  const headers = {};
  for (const line of head.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let body = raw.subarray(headEnd + 4);
  let complete = true;
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const parts = [];
    let offset = 0;
    complete = false;
    for (;;) {
      const lineEnd = body.indexOf('\r\n', offset);
      if (lineEnd < 0) break;
      const size = Number.parseInt(body.subarray(offset, lineEnd).toString('latin1'), 16);
      if (Number.isNaN(size)) break;
      if (size === 0) {
        complete = true;
        break;
      }
      if (lineEnd + 2 + size > body.length) break;
      parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size));
      offset = lineEnd + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers['content-length'] !== undefined) {
    complete = body.length >= Number(headers['content-length']);
  }
  const contentType = headers['content-type'] ?? '';
  let json;
  if (/^application\/json/i.test(contentType)) {
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      json = undefined;
    }
  }
  return { status, headers, body, json, complete, retryAfter: headers['retry-after'], text: body.toString('utf8') };
}

/**
 * Sends raw bytes (a Buffer, or a string taken as latin1 so any byte can be written) and reads
 * until the server closes or `timeoutMs`. Returns the parsed response plus { ms, error, closed }.
 */
export function rawExchange(payload, { port = PORTS.proxy, timeoutMs = 15_000 } = {}) {
  return new Promise((resolve) => {
    const started = performance.now();
    const chunks = [];
    let settled = false;
    const socket = net.connect({ host: '127.0.0.1', port });
    const finish = (extra) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...parseHttpResponse(Buffer.concat(chunks)), ms: performance.now() - started, ...extra });
    };
    const timer = setTimeout(() => finish({ error: 'timeout', closed: false }), timeoutMs);
    socket.on('connect', () => socket.write(typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload));
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => finish({ closed: true }));
    socket.on('close', () => finish({ closed: true }));
    socket.on('error', (error) => finish({ error: error.code ?? error.message, closed: true }));
  });
}
