// Where the fault-test stack lives and which ports it uses. The port numbers are not written
// here: they come from scripts/lib/defaults.sh (tests/lib/defaults.mjs reads it).

import fs from 'node:fs';
import path from 'node:path';
import { DEFAULTS, ROOT } from '../../lib/defaults.mjs';

export { DEFAULTS, ROOT };

fs.mkdirSync(path.join(ROOT, '.stack', 'faults', 'logs'), { recursive: true });
/** The launcher's state folder for this stack (resolved: /proc/<pid>/exe shows real paths). */
export const STATE = fs.realpathSync(path.join(ROOT, '.stack', 'faults'));
export const LOGS = path.join(STATE, 'logs');
export const TARGET_DIR = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
export const LAUNCHER = path.join(ROOT, 'scripts', 'launcher.sh');

/**
 * FAULTS_PORT_OFFSET (default 0) moves every port by the same amount, for a machine where
 * something else already holds one of them (startStack says which).
 */
const OFFSET = Number.parseInt(process.env.FAULTS_PORT_OFFSET ?? '0', 10) || 0;
const port = (name) => Number(DEFAULTS[`FAULTS_${name}`]) + OFFSET;
export const PORTS = {
  pg: port('POSTGRES_PORT'),
  redis: port('REDIS_PORT'),
  proxy: port('PROXY_PORT'),
  writer: port('WRITER_PORT'),
  reader: port('READER_PORT'),
  writerMetrics: port('WRITER_METRICS_PORT'),
  readerMetrics: port('READER_METRICS_PORT'),
};
export const API = `http://127.0.0.1:${PORTS.proxy}`;
export const DATABASE = 'faults';
export const DATABASE_URL = `postgres://postgres@127.0.0.1:${PORTS.pg}/${DATABASE}`;
export const REDIS_URL = `redis://127.0.0.1:${PORTS.redis}/0`;
/** The services' SHUTDOWN_TIMEOUT_MS (their default, set explicitly so tests can rely on it). */
export const SHUTDOWN_TIMEOUT_MS = 10_000;

/** Every figure a test measures, printed as `[fault-figure] name: value` (docs quote them). */
export function figure(name, value) {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  console.log(`[fault-figure] ${name}: ${text}`);
}

export function log(...args) {
  console.log(`[faults ${new Date().toISOString().slice(11, 23)}]`, ...args);
}
