// Helpers for the live compose checks (tests/compose/*.test.mjs): the running stack as Docker
// sees it, found by the labels every Compose version puts on what it creates
// (com.docker.compose.project / .service), so the checks read the same under Compose v2
// (`docker compose`, containers named ledger-writer-1) and Compose 1.29 (`docker-compose`,
// ledger_writer_1).
//
// scripts/test-compose.sh starts the stack and sets the environment:
//   COMPOSE_CMD            the Compose command line ("docker compose" or "docker-compose")
//   COMPOSE_PROJECT_NAME   the project the checks run against
//   COMPOSE_SERVICES       the services that were brought up (space-separated)
//   API_URL                nginx, published on the host (127.0.0.1:PROXY_PORT)
//   PROMETHEUS_URL         Prometheus, published on the host (127.0.0.1:PROMETHEUS_PORT)
//   BUSYBOX_IMAGE          an image with busybox, for throw-away containers on the networks
// Traffic goes only to 127.0.0.1 and to the containers' own addresses.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { DEFAULTS, localUrl } from '../lib/defaults.mjs';

export { randomUUID };

export const PROJECT = process.env.COMPOSE_PROJECT_NAME ?? assert.fail('COMPOSE_PROJECT_NAME is not set');
export const API = (process.env.API_URL ?? localUrl('PROXY_PORT')).replace(/\/$/, '');
export const PROMETHEUS = (process.env.PROMETHEUS_URL ?? localUrl('PROMETHEUS_PORT')).replace(/\/$/, '');
export const SERVICES = (process.env.COMPOSE_SERVICES ?? '').split(/\s+/).filter(Boolean);
export const BUSYBOX = process.env.BUSYBOX_IMAGE ?? 'busybox:1.37.0-musl';
const COMPOSE = (process.env.COMPOSE_CMD ?? 'docker compose').split(/\s+/);

/** The writer's and reader's ports in their containers (docker-compose.yml: LISTEN_ADDR, METRICS_ADDR), the
 * native defaults (tests/ops/defaults.test.mjs checks that they agree). */
export const PORTS = {
  writer: { api: Number(DEFAULTS.WRITER_PORT), metrics: Number(DEFAULTS.WRITER_METRICS_PORT) },
  reader: { api: Number(DEFAULTS.READER_PORT), metrics: Number(DEFAULTS.READER_METRICS_PORT) },
};

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function run(file, args, { allowFailure = false, timeout = 600_000 } = {}) {
  try {
    return execFileSync(file, args, { encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (error) {
    if (allowFailure) return null;
    throw new Error(`${file} ${args.join(' ')} failed (${error.status ?? error.signal}):\n${error.stderr ?? ''}${error.stdout ?? ''}`);
  }
}

export const docker = (args, options) => run('docker', args, options);
export const compose = (args, options) => run(COMPOSE[0], [...COMPOSE.slice(1), ...args], options);

/** Ids of the project's running (or restarting) containers of one service, or of all. */
export function containers(service) {
  const filters = ['--filter', `label=com.docker.compose.project=${PROJECT}`];
  if (service) filters.push('--filter', `label=com.docker.compose.service=${service}`);
  return docker(['ps', '-q', '--no-trunc', ...filters]).split('\n').filter(Boolean).sort();
}

export function inspect(id) {
  return JSON.parse(docker(['inspect', id]))[0];
}

/** "name (service): health" for one container. */
export function describeContainer(info) {
  const health = info.State.Health?.Status ?? 'no health check';
  return `${info.Name.replace(/^\//, '')}: ${info.State.Status}, ${health}`;
}

/**
 * Waits until every given container runs and reports healthy; returns the seconds it took.
 * Fails after `seconds`, naming every container that is not.
 */
export async function waitHealthy(ids, seconds) {
  assert.ok(ids.length > 0, 'no containers to wait for');
  const started = Date.now();
  for (;;) {
    const infos = ids.map(inspect);
    const waiting = infos.filter((info) => !(info.State.Running && info.State.Health?.Status === 'healthy'));
    if (waiting.length === 0) return (Date.now() - started) / 1000;
    if (Date.now() - started > seconds * 1000) {
      assert.fail(`not healthy within ${seconds} s:\n  ${waiting.map(describeContainer).join('\n  ')}`);
    }
    await sleep(500);
  }
}

/** The network Compose made for `name` in docker-compose.yml (e.g. ledger_app). */
export const networkName = (name) => `${PROJECT}_${name}`;

/** A container's address on one of the project's networks. */
export function addressOn(id, network) {
  const address = inspect(id).NetworkSettings.Networks[networkName(network)]?.IPAddress;
  assert.ok(address, `${id.slice(0, 12)} has no address on ${networkName(network)}`);
  return address;
}

/**
 * Runs a shell command in a throw-away busybox container on one of the project's networks
 * (removed afterwards) and returns { ok, output }.
 */
export function onNetwork(network, script) {
  try {
    const output = execFileSync(
      'docker',
      ['run', '--rm', '--network', networkName(network), '--entrypoint', '/bin/busybox', BUSYBOX, 'sh', '-c', script],
      { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    return { ok: true, output: output.trim() };
  } catch (error) {
    return { ok: false, output: `${error.stdout ?? ''}${error.stderr ?? ''}`.trim() };
  }
}

// --- the API, through nginx on 127.0.0.1 -----------------------------------------------------

export async function request(path, { method = 'GET', body } = {}) {
  const response = await fetch(API + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, text, json };
}

export const postTransaction = (account, amount) =>
  request('/transactions', { method: 'POST', body: { account_id: account, amount } });

/** Like `request`, but a refused connection or a timeout is an answer (status 0), not a throw. */
export async function attempt(path, options) {
  try {
    return await request(path, options);
  } catch (error) {
    return { status: 0, text: String(error.cause?.code ?? error.message) };
  }
}

// --- the services' own /metrics, by container address ---------------------------------------

/** The sum of http_requests_total (every route, method and status) that one container serves. */
export async function requestsServed(address, port) {
  const response = await fetch(`http://${address}:${port}/metrics`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(response.status, 200, `GET http://${address}:${port}/metrics`);
  let sum = 0;
  for (const line of (await response.text()).split('\n')) {
    // Label values hold braces (route="/accounts/{account_id}"), so match up to the last one.
    const match = /^http_requests_total(?:\{.*\})? ([0-9.eE+-]+)$/.exec(line);
    if (match) sum += Number(match[1]);
  }
  return sum;
}
