// The fault-test harness: a complete, private copy of the stack (PostgreSQL, Redis, writer,
// reader, nginx) on its own ports, that the tests may break at will, plus a bounded client loop
// and the invariant checker. Built-ins only (node:child_process, node:net, global fetch).
//
//   part        port    lives in
//   PostgreSQL  55432   .stack/faults/pg        (initdb'd here, run as the `postgres` user)
//   Redis       56379   .stack/faults/redis     (no persistence: a restart comes back empty)
//   nginx       18080   .stack/faults/nginx     (the repository's nginx/nginx.conf, own env/)
//   writer      18081   metrics 19181           (release binary, copied to .stack/faults/bin)
//   reader      18082   metrics 19182
//
// The shared PostgreSQL (5432), Redis (6379) and the main stack (8080-8082) are never touched.
// Every process is started from here, its pid kept under .stack/faults, and stopped by that
// pid; `cleanupStale()` removes what an aborted earlier run left behind.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export { randomUUID, sleep };

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const STATE = path.join(ROOT, '.stack', 'faults');
export const LOGS = path.join(STATE, 'logs');
const PGDATA = path.join(STATE, 'pg');
const BIN = path.join(STATE, 'bin');
const NGINX_PREFIX = path.join(STATE, 'nginx');
const TARGET_DIR = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');

/**
 * FAULTS_PORT_OFFSET (default 0) moves every port by the same amount, for a machine where
 * something else already holds one of them (startStack says which).
 */
const OFFSET = Number.parseInt(process.env.FAULTS_PORT_OFFSET ?? '0', 10) || 0;
export const PORTS = {
  pg: 55432 + OFFSET,
  redis: 56379 + OFFSET,
  proxy: 18080 + OFFSET,
  writer: 18081 + OFFSET,
  reader: 18082 + OFFSET,
  writerMetrics: 19181 + OFFSET,
  readerMetrics: 19182 + OFFSET,
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

// --- running commands ----------------------------------------------------------------------

/** Runs a command to completion; never throws. Returns { code, stdout, stderr }. */
export function run(cmd, args, { timeoutMs = 60_000, input } = {}) {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { timeout: timeoutMs, maxBuffer: 256 * 1024 * 1024, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) || (error && !stdout ? String(error.message) : '') });
      },
    );
    if (input !== undefined) child.stdin.end(input);
  });
}

/** Runs a command with stdout and stderr appended to `logFile`; resolves to its exit code. */
function runToFiles(cmd, args, logFile) {
  const fd = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code ?? -1));
    child.once('error', () => resolve(-1));
  });
}

/** Runs a command and throws with its output if it fails. Returns stdout. */
export async function must(cmd, args, options) {
  const result = await run(cmd, args, options);
  if (result.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${result.code}): ${result.stderr}${result.stdout}`);
  }
  return result.stdout;
}

/** Polls `check` (async, truthy = done) every `intervalMs` until `timeoutMs`; throws on timeout. */
export async function waitFor(what, check, { timeoutMs = 30_000, intervalMs = 100 } = {}) {
  const started = Date.now();
  let lastError;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() - started > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${lastError.message}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

function pidAlive(pid) {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); it is dead for our purposes.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

function readPid(file) {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function childrenOf(pid) {
  const children = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

/** Sends `signal` to `pid`, waits up to `timeoutMs` for it to go, then SIGKILLs it. */
async function terminatePid(pid, { signal = 'SIGTERM', timeoutMs = 15_000 } = {}) {
  if (!pidAlive(pid)) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(pid) && Date.now() < deadline) await sleep(50);
  if (pidAlive(pid)) {
    for (const child of childrenOf(pid)) {
      try {
        process.kill(child, 'SIGKILL');
      } catch {
        // gone
      }
    }
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

function portAnswers(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

// --- PostgreSQL ----------------------------------------------------------------------------

function pgBinDir() {
  if (process.env.PG_BIN_DIR) return process.env.PG_BIN_DIR;
  const base = '/usr/lib/postgresql';
  const versions = fs.existsSync(base)
    ? fs.readdirSync(base).filter((v) => fs.existsSync(path.join(base, v, 'bin', 'initdb')))
    : [];
  versions.sort((a, b) => Number(b) - Number(a));
  if (!versions.length) throw new Error('no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (install postgresql)');
  return path.join(base, versions[0], 'bin');
}

async function postgresIds() {
  const uid = Number((await must('id', ['-u', 'postgres'])).trim());
  const gid = Number((await must('id', ['-g', 'postgres'])).trim());
  return { uid, gid };
}

/** Runs a PostgreSQL server tool as the `postgres` OS user (the server refuses root). */
function asPostgres(tool, args, options) {
  const binary = path.join(pgBinDir(), tool);
  if (process.getuid && process.getuid() === 0) return run('runuser', ['-u', 'postgres', '--', binary, ...args], options);
  return run(binary, args, options);
}

export const pg = {
  async init() {
    if (fs.existsSync(path.join(PGDATA, 'PG_VERSION'))) return;
    fs.rmSync(PGDATA, { recursive: true, force: true });
    fs.mkdirSync(PGDATA, { recursive: true, mode: 0o700 });
    if (process.getuid() === 0) {
      const { uid, gid } = await postgresIds();
      fs.chownSync(PGDATA, uid, gid);
    }
    const result = await asPostgres('initdb', ['-D', PGDATA, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-instructions'], { timeoutMs: 120_000 });
    if (result.code !== 0) throw new Error(`initdb failed: ${result.stderr}${result.stdout}`);
    fs.appendFileSync(
      path.join(PGDATA, 'postgresql.conf'),
      [
        '',
        '# fault-test cluster (tests/faults/harness.mjs)',
        "listen_addresses = '127.0.0.1'",
        "unix_socket_directories = ''",
        'max_connections = 80',
        'fsync = on',
        'synchronous_commit = on',
        "log_min_messages = 'warning'",
        '',
      ].join('\n'),
    );
  },

  async isReady() {
    const result = await run('pg_isready', ['-q', '-U', 'postgres', '-h', '127.0.0.1', '-p', String(PORTS.pg), '-t', '2'], { timeoutMs: 10_000 });
    return result.code === 0;
  },

  async start() {
    const logFile = path.join(LOGS, 'postgres.log');
    if (!fs.existsSync(logFile)) fs.writeFileSync(logFile, '');
    if (process.getuid() === 0) {
      const { uid, gid } = await postgresIds();
      fs.chownSync(logFile, uid, gid);
    }
    const result = await asPostgres('pg_ctl', ['-D', PGDATA, '-l', logFile, '-o', `-p ${PORTS.pg}`, '-w', '-t', '90', 'start'], { timeoutMs: 120_000 });
    if (result.code !== 0) throw new Error(`pg_ctl start failed: ${result.stderr}${result.stdout}\n${tail(logFile)}`);
    await waitFor('PostgreSQL to accept connections', () => pg.isReady(), { timeoutMs: 60_000, intervalMs: 200 });
  },

  /** pg_ctl stop: `fast` (clean, aborts sessions) or `immediate` (a crash; WAL replay on start). */
  async stop(mode = 'fast') {
    if (!fs.existsSync(path.join(PGDATA, 'postmaster.pid'))) return;
    const result = await asPostgres('pg_ctl', ['-D', PGDATA, '-m', mode, '-w', '-t', '60', 'stop'], { timeoutMs: 90_000 });
    if (result.code !== 0 && fs.existsSync(path.join(PGDATA, 'postmaster.pid'))) {
      const pid = readPid(path.join(PGDATA, 'postmaster.pid'));
      if (pid && pidAlive(pid)) throw new Error(`pg_ctl stop failed: ${result.stderr}${result.stdout}`);
    }
  },

  running() {
    const pid = readPid(path.join(PGDATA, 'postmaster.pid'));
    return Boolean(pid && pidAlive(pid));
  },

  /** Drops and recreates the test database (the writer creates the schema on start). */
  async resetDatabase() {
    await must('psql', [...psqlArgs('postgres'), '-c', `DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`]);
    await must('psql', [...psqlArgs('postgres'), '-c', `CREATE DATABASE ${DATABASE}`]);
  },
};

function psqlArgs(database = DATABASE) {
  return ['-h', '127.0.0.1', '-p', String(PORTS.pg), '-U', 'postgres', '-d', database, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-F', '\t'];
}

/** Runs SQL on the test database; returns the rows as arrays of strings (tab-separated output). */
export async function sql(statement) {
  const stdout = await must('psql', [...psqlArgs(), '-c', statement], { timeoutMs: 120_000 });
  return stdout
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => line.split('\t'));
}

/** One value of a one-row, one-column query. */
export async function sqlValue(statement) {
  const rows = await sql(statement);
  return rows.length ? rows[0][0] : undefined;
}

/**
 * Holds the row lock of one account for `holdMs` in a separate session (psql in the
 * background), so a write to that account waits inside PostgreSQL: a request that is
 * guaranteed to be in flight. Resolves `locked` once the lock is held; `done` when released.
 */
export function holdAccountLock(accountId, holdMs) {
  const seconds = (holdMs / 1000).toFixed(3);
  const script = [
    'BEGIN;',
    `SELECT 'locked' FROM accounts WHERE account_id = '${accountId}' FOR UPDATE;`,
    `SELECT pg_sleep(${seconds});`,
    'COMMIT;',
  ].join('\n');
  const child = spawn('psql', [...psqlArgs(), '-f', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let lockedResolve;
  const locked = new Promise((resolve) => {
    lockedResolve = resolve;
  });
  child.stdout.on('data', (chunk) => {
    out += chunk;
    if (out.includes('locked')) lockedResolve();
  });
  child.stderr.on('data', (chunk) => {
    out += chunk;
  });
  const done = new Promise((resolve) => child.on('exit', (code) => resolve({ code, out })));
  child.stdin.end(script);
  return { locked, done };
}

/** Waits until some session of `application` (writer/reader) waits for a row lock. */
export async function waitForLockWaiter(application = 'writer', timeoutMs = 15_000) {
  await waitFor(
    `a ${application} statement waiting for a row lock`,
    async () => Number(await sqlValue(`SELECT count(*) FROM pg_stat_activity WHERE application_name = '${application}' AND wait_event_type = 'Lock'`)) > 0,
    { timeoutMs, intervalMs: 25 },
  );
}

// --- Redis ---------------------------------------------------------------------------------

export const redis = {
  pidfile: path.join(STATE, 'redis.pid'),

  async start() {
    fs.mkdirSync(path.join(STATE, 'redis'), { recursive: true });
    await must('redis-server', [
      '--daemonize', 'yes',
      '--bind', '127.0.0.1',
      '--port', String(PORTS.redis),
      '--save', '',
      '--appendonly', 'no',
      '--dir', path.join(STATE, 'redis'),
      '--logfile', path.join(LOGS, 'redis.log'),
      '--pidfile', redis.pidfile,
    ]);
    await waitFor('Redis to answer PING', () => redis.isUp(), { timeoutMs: 30_000, intervalMs: 100 });
  },

  async isUp() {
    const result = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(PORTS.redis), 'ping'], { timeoutMs: 5_000 });
    return result.code === 0 && result.stdout.trim() === 'PONG';
  },

  /** Stops the server (SIGTERM; nothing is saved, so it comes back empty). */
  async stop() {
    const pid = readPid(redis.pidfile);
    if (pid && pidAlive(pid) && cmdline(pid).includes(`:${PORTS.redis}`)) {
      await terminatePid(pid, { signal: 'SIGTERM', timeoutMs: 10_000 });
    }
    fs.rmSync(redis.pidfile, { force: true });
    await waitFor('Redis to stop', async () => !(await portAnswers(PORTS.redis)), { timeoutMs: 10_000 });
  },

  async cli(...args) {
    return must('redis-cli', ['-h', '127.0.0.1', '-p', String(PORTS.redis), ...args], { timeoutMs: 10_000 });
  },
};

// --- writer and reader -----------------------------------------------------------------------

/** Copies the release binaries once per process, so a concurrent `cargo build` cannot swap them mid-test. */
function snapshotBinaries() {
  fs.mkdirSync(BIN, { recursive: true });
  for (const name of ['writer', 'reader']) {
    const source = path.join(TARGET_DIR, 'release', name);
    if (!fs.existsSync(source)) {
      throw new Error(`${source} is missing: build it first (bash scripts/stack.sh start, or cargo build --release -p writer -p reader)`);
    }
    const copy = path.join(BIN, `${name}.tmp-${process.pid}`);
    fs.copyFileSync(source, copy);
    fs.chmodSync(copy, 0o755);
    fs.renameSync(copy, path.join(BIN, name));
  }
}

class Service {
  constructor(name, port, metricsPort) {
    this.name = name;
    this.port = port;
    this.metricsPort = metricsPort;
    this.pidfile = path.join(STATE, `${name}.pid`);
    this.child = undefined;
    this.exited = undefined; // Promise<{ code, signal, at }>
    this.extraEnv = {};
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid() {
    return this.child?.pid;
  }

  alive() {
    return Boolean(this.child && this.child.exitCode === null && this.child.signalCode === null && pidAlive(this.child.pid));
  }

  env() {
    return {
      PATH: process.env.PATH,
      HOME: process.env.HOME ?? '/root',
      DATABASE_URL,
      REDIS_URL,
      LISTEN_ADDR: `127.0.0.1:${this.port}`,
      METRICS_ADDR: `127.0.0.1:${this.metricsPort}`,
      LOG_FORMAT: 'text',
      RUST_LOG: 'info',
      SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
      ...this.extraEnv,
    };
  }

  /** Starts the process and waits until GET /ping on its own port answers 200. */
  async start({ waitHealthy = true } = {}) {
    assert.ok(!this.alive(), `${this.name} is already running (pid ${this.pid})`);
    const logFile = path.join(LOGS, `${this.name}.log`);
    const fd = fs.openSync(logFile, 'a');
    fs.writeSync(fd, `\n===== ${new Date().toISOString()} starting ${this.name} =====\n`);
    const child = spawn(path.join(BIN, this.name), [], {
      env: this.env(),
      stdio: ['ignore', fd, fd],
      detached: true,
    });
    fs.closeSync(fd);
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() }));
      child.once('error', (error) => resolve({ code: -1, signal: null, at: Date.now(), error }));
    });
    child.unref();
    fs.writeFileSync(this.pidfile, String(child.pid));
    if (waitHealthy) await this.waitHealthy();
    return this;
  }

  async waitHealthy(timeoutMs = 90_000) {
    await waitFor(`${this.name} GET /ping`, async () => {
      if (this.child && (this.child.exitCode !== null || this.child.signalCode !== null)) {
        throw new Error(`${this.name} exited (${this.child.exitCode ?? this.child.signalCode}); see ${LOGS}/${this.name}.log\n${tail(path.join(LOGS, `${this.name}.log`))}`);
      }
      const res = await fetch(`${this.url}/ping`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      return res.status === 200;
    }, { timeoutMs, intervalMs: 100 });
  }

  /**
   * Sends `signal` and waits for the process to exit (up to `timeoutMs`; then SIGKILL and an
   * error). Returns { exitMs, code, signal } with exitMs measured from the signal.
   */
  async stop(signal = 'SIGTERM', timeoutMs = 20_000) {
    if (!this.alive()) return { exitMs: 0, code: this.child?.exitCode ?? null, signal: this.child?.signalCode ?? null };
    const sentAt = Date.now();
    process.kill(this.child.pid, signal);
    let timer;
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => resolve(undefined), timeoutMs);
    });
    const exit = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (!exit) {
      process.kill(this.child.pid, 'SIGKILL');
      await this.exited;
      throw new Error(`${this.name} did not exit within ${timeoutMs} ms of ${signal}; killed it`);
    }
    fs.rmSync(this.pidfile, { force: true });
    return { exitMs: exit.at - sentAt, code: exit.code, signal: exit.signal };
  }

  /** SIGKILL, and wait until it is gone. */
  async kill() {
    return this.stop('SIGKILL', 10_000);
  }

  async restart(signal = 'SIGTERM') {
    const stopped = await this.stop(signal);
    await this.start();
    return stopped;
  }

  /** A counter or gauge from the private /metrics listener (sum over label sets). */
  async metric(name) {
    const res = await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    let total = 0;
    for (const line of text.split('\n')) {
      if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return total;
  }
}

export const writer = new Service('writer', PORTS.writer, PORTS.writerMetrics);
export const reader = new Service('reader', PORTS.reader, PORTS.readerMetrics);

// --- nginx ---------------------------------------------------------------------------------

function nginxBinary() {
  for (const candidate of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx']) {
    if (fs.existsSync(candidate)) return candidate;
  }
  return 'nginx';
}

export const nginx = {
  pidfile: path.join(STATE, 'nginx.pid'),
  child: undefined,

  prepare() {
    const env = path.join(NGINX_PREFIX, 'env');
    fs.mkdirSync(env, { recursive: true });
    const link = path.join(NGINX_PREFIX, 'nginx.conf');
    fs.rmSync(link, { force: true });
    fs.symlinkSync(path.join(ROOT, 'nginx', 'nginx.conf'), link);
    // The same upstream settings as nginx/native/upstreams.conf, on the harness's ports.
    fs.writeFileSync(
      path.join(env, 'upstreams.conf'),
      [
        '# Generated by tests/faults/harness.mjs: the fault-test stack (see nginx/native/upstreams.conf).',
        'upstream writer {',
        `    server 127.0.0.1:${PORTS.writer} max_fails=0;`,
        '    keepalive 64;',
        '    keepalive_requests 100000;',
        '}',
        'upstream reader {',
        `    server 127.0.0.1:${PORTS.reader} max_fails=0;`,
        '    keepalive 64;',
        '    keepalive_requests 100000;',
        '}',
        '',
      ].join('\n'),
    );
    fs.writeFileSync(path.join(env, 'listen.conf'), `# Generated by tests/faults/harness.mjs.\nlisten 127.0.0.1:${PORTS.proxy};\n`);
  },

  args(extra = []) {
    return ['-e', 'stderr', '-p', NGINX_PREFIX, '-c', path.join(NGINX_PREFIX, 'nginx.conf'), ...extra];
  },

  async start() {
    nginx.prepare();
    // nginx.conf logs to /dev/stdout and /dev/stderr, which cannot be opened on the socket
    // pairs node uses for pipes: nginx always gets plain files.
    const check = await runToFiles(nginxBinary(), nginx.args(['-t', '-q', '-g', `pid ${nginx.pidfile};`]), path.join(LOGS, 'nginx.error.log'));
    if (check !== 0) throw new Error(`nginx configuration test failed; see ${LOGS}/nginx.error.log\n${tail(path.join(LOGS, 'nginx.error.log'))}`);
    const out = fs.openSync(path.join(LOGS, 'nginx.access.log'), 'a');
    const err = fs.openSync(path.join(LOGS, 'nginx.error.log'), 'a');
    const child = spawn(nginxBinary(), nginx.args(['-g', `pid ${nginx.pidfile}; daemon off;`]), {
      stdio: ['ignore', out, err],
      detached: true,
    });
    fs.closeSync(out);
    fs.closeSync(err);
    child.unref();
    nginx.child = child;
    await waitFor('nginx GET /ping', async () => {
      if (child.exitCode !== null) throw new Error(`nginx exited; see ${LOGS}/nginx.error.log\n${tail(path.join(LOGS, 'nginx.error.log'))}`);
      const res = await fetch(`${API}/ping`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      return res.status === 200;
    }, { timeoutMs: 30_000 });
  },

  alive() {
    return Boolean(nginx.child && nginx.child.exitCode === null && nginx.child.signalCode === null && pidAlive(nginx.child.pid));
  },

  /** The master and its workers, all still alive. */
  workersAlive() {
    if (!nginx.alive()) return false;
    return childrenOf(nginx.child.pid).filter((pid) => pidAlive(pid)).length > 0;
  },

  async stop() {
    const pid = nginx.child?.pid ?? readPid(nginx.pidfile);
    if (pid) await terminatePid(pid, { signal: 'SIGTERM', timeoutMs: 10_000 });
    fs.rmSync(nginx.pidfile, { force: true });
    nginx.child = undefined;
  },
};

// --- the whole stack -------------------------------------------------------------------------

function tail(file, lines = 20) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * Stops whatever an earlier, aborted run left behind, identified by its pid file under
 * .stack/faults (and, for safety, its command line), then checks that every port is free.
 */
export async function cleanupStale({ checkPorts = true } = {}) {
  fs.mkdirSync(LOGS, { recursive: true });
  const nginxPid = readPid(nginx.pidfile);
  if (nginxPid && pidAlive(nginxPid) && cmdline(nginxPid).includes(NGINX_PREFIX)) {
    log(`stopping stale nginx (pid ${nginxPid})`);
    await terminatePid(nginxPid, { signal: 'SIGTERM', timeoutMs: 10_000 });
  }
  for (const name of ['writer', 'reader']) {
    const file = path.join(STATE, `${name}.pid`);
    const pid = readPid(file);
    if (pid && pidAlive(pid) && cmdline(pid).includes(path.join(BIN, name))) {
      log(`killing stale ${name} (pid ${pid})`);
      await terminatePid(pid, { signal: 'SIGKILL', timeoutMs: 5_000 });
    }
    fs.rmSync(file, { force: true });
  }
  const redisPid = readPid(redis.pidfile);
  if (redisPid && pidAlive(redisPid) && cmdline(redisPid).includes(`:${PORTS.redis}`)) {
    log(`stopping stale Redis (pid ${redisPid})`);
    await terminatePid(redisPid, { signal: 'SIGTERM', timeoutMs: 10_000 });
  }
  fs.rmSync(redis.pidfile, { force: true });
  if (fs.existsSync(path.join(PGDATA, 'postmaster.pid'))) {
    const pid = readPid(path.join(PGDATA, 'postmaster.pid'));
    if (pid && pidAlive(pid)) {
      log(`stopping stale PostgreSQL (pid ${pid})`);
      await pg.stop('immediate');
    }
  }
  if (!checkPorts) return;
  const busy = [];
  for (const [what, port] of Object.entries(PORTS)) {
    if (await portAnswers(port)) busy.push(`${what} ${port}`);
  }
  if (busy.length) {
    throw new Error(`ports in use by something this harness did not start: ${busy.join(', ')} (stop it, or set FAULTS_PORT_OFFSET to move every fault-test port, e.g. FAULTS_PORT_OFFSET=1000)`);
  }
}

/**
 * Starts the whole private stack on a fresh, empty database and an empty Redis.
 * `env` adds variables to both services (e.g. { DB_ACQUIRE_TIMEOUT_MS: '2000' }).
 */
export async function startStack({ env = {} } = {}) {
  const started = Date.now();
  await cleanupStale();
  snapshotBinaries();
  await pg.init();
  await pg.start();
  await pg.resetDatabase();
  await redis.start();
  writer.extraEnv = { ...env };
  reader.extraEnv = { ...env };
  await writer.start(); // runs the migrations
  await reader.start();
  await nginx.start();
  log(`fault-test stack up in ${Date.now() - started} ms (API ${API})`);
}

/** Stops everything startStack started; never throws (for `after` hooks). */
export async function stopStack() {
  const steps = [
    ['nginx', () => nginx.stop()],
    ['reader', () => (reader.alive() ? reader.stop('SIGTERM', 15_000) : undefined)],
    ['writer', () => (writer.alive() ? writer.stop('SIGTERM', 15_000) : undefined)],
    ['redis', () => redis.stop()],
    ['postgres', () => pg.stop('fast')],
  ];
  for (const [name, step] of steps) {
    try {
      await step();
    } catch (error) {
      log(`teardown of ${name}: ${error.message}`);
      if (name === 'reader' || name === 'writer') {
        const service = name === 'reader' ? reader : writer;
        if (service.alive()) process.kill(service.pid, 'SIGKILL');
      }
    }
  }
}

/** Asserts every part of the stack is still running (no crash), and answering. */
export async function assertAllAlive() {
  assert.ok(writer.alive(), 'the writer process is gone');
  assert.ok(reader.alive(), 'the reader process is gone');
  assert.ok(nginx.alive() && nginx.workersAlive(), 'nginx (master or workers) is gone');
  await writer.waitHealthy(10_000);
  await reader.waitHealthy(10_000);
  const res = await request('GET', '/ping');
  assert.equal(res.status, 200, `GET /ping through nginx: ${res.status} ${res.text}`);
}

// --- HTTP ----------------------------------------------------------------------------------

/**
 * One request through nginx (or `base`). Never throws: a network failure or timeout is
 * status 0 with `error`. Returns { status, ms, text, json, retryAfter, contentType, replayed, error }.
 */
export async function request(method, pathname, { body, headers = {}, timeoutMs = 20_000, base = API } = {}) {
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

// --- the bounded client loop ------------------------------------------------------------------

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * What the clients know: every POST they made (one entry per Idempotency-Key, with every
 * attempt), per account the sum of what was acknowledged and of what was ever sent.
 */
export class Ledger {
  constructor(accounts) {
    this.accounts = accounts;
    this.ops = new Map(); // key -> op
    this.ackedSum = new Map(accounts.map((a) => [a, 0]));
    this.sentSum = new Map(accounts.map((a) => [a, 0]));
    this.ackedList = [];
  }

  newOp(account, amount) {
    const op = { key: `fault-${randomUUID()}`, account, amount, attempts: [], acked: undefined, ackedAt: undefined, sentAt: undefined };
    this.ops.set(op.key, op);
    return op;
  }

  markSent(op) {
    if (op.sentAt === undefined) {
      op.sentAt = Date.now();
      this.sentSum.set(op.account, this.sentSum.get(op.account) + op.amount);
    }
  }

  markAcked(op, transaction, res) {
    if (op.acked) {
      assert.equal(transaction.transaction_id, op.acked.transaction_id, `key ${op.key} acknowledged with two different ids`);
      return;
    }
    op.acked = transaction;
    op.ackedAt = Date.now();
    op.replayed = res.replayed;
    this.ackedList.push(op);
    this.ackedSum.set(op.account, this.ackedSum.get(op.account) + op.amount);
  }

  acked() {
    return this.ackedList;
  }
}

/**
 * Starts `workers` concurrent clients that, until stopped (or `durationMs` / `count` ops are
 * done), send through nginx:
 *   - POST /transactions with a fresh Idempotency-Key per operation, to a random account of
 *     `ledger.accounts`, amount 1..100 (positive, so balances only grow and every read can be
 *     bounded); on a 503 or a network error they retry the same key after Retry-After (if
 *     `retry`), for at most `retryForMs`;
 *   - GET /accounts/{id} (share `readRatio`), checked against what the clients know:
 *     sum(acked before the read was sent) <= balance <= sum(sent before the answer came);
 *   - GET /transactions/{id} of an acknowledged transaction (share `txReadRatio`).
 * `readers` more workers only read (80% accounts, 20% transactions), so reads go on while
 * every writer is busy retrying.
 * Every response is recorded in `responses` with its classification:
 *   ok | documented-503 | stale (a read below the acknowledged sum) | unexpected.
 * Returns { ledger, responses, stop(): Promise<summary>, done }.
 */
export function startLoad({
  ledger,
  workers = 8,
  readers = 0,
  durationMs = 60_000,
  count = Infinity,
  readRatio = 0.3,
  txReadRatio = 0.1,
  retry = true,
  retryForMs = 60_000,
  thinkMs = 5,
  maxRetryAfterMs = 1000,
} = {}) {
  const responses = [];
  const t0 = Date.now();
  let stopping = false;
  let started = 0;
  const record = (kind, res, { sentAt, ...extra } = {}) => {
    const entry = {
      kind,
      at: Date.now() - t0, // when the answer came
      sentAt: sentAt === undefined ? undefined : sentAt - t0,
      status: res.status,
      ms: res.ms,
      retryAfter: res.retryAfter,
      error: res.error,
      text: res.status === 200 || res.status === 201 ? undefined : res.text?.slice(0, 300),
      ...extra,
    };
    responses.push(entry);
    return entry;
  };

  async function postOnce(op) {
    const body = `{"account_id":"${op.account}","amount":${op.amount}}`;
    const sentAt = Date.now();
    ledger.markSent(op);
    const res = await request('POST', '/transactions', { body, headers: { 'idempotency-key': op.key } });
    let cls = 'unexpected';
    if (res.status === 201) {
      const t = res.json;
      if (t && UUID_RE.test(t.transaction_id) && t.account_id === op.account && t.amount === op.amount && typeof t.created_at === 'string') {
        cls = 'ok';
        ledger.markAcked(op, t, res);
      }
    } else if (unavailableClass(res)) {
      cls = unavailableClass(res);
    }
    op.attempts.push({ status: res.status, ms: res.ms, cls, at: sentAt - t0 });
    record('post', res, { cls, sentAt, key: op.key, replayed: res.replayed });
    return { res, cls };
  }

  async function post() {
    const account = ledger.accounts[Math.floor(Math.random() * ledger.accounts.length)];
    const op = ledger.newOp(account, 1 + Math.floor(Math.random() * 100));
    const giveUpAt = Date.now() + retryForMs;
    for (;;) {
      const { res, cls } = await postOnce(op);
      if (cls === 'ok') return;
      // 4xx other than a 503 would be a bug in the client or the service: do not retry those.
      const retriable = res.status === 0 || res.status === 503 || res.status === 502 || res.status === 504;
      if (!retry || !retriable || Date.now() > giveUpAt) return;
      const wait = Math.min(maxRetryAfterMs, 1000 * Number(res.retryAfter ?? 1) || 200);
      await sleep(wait);
    }
  }

  async function readAccount() {
    const account = ledger.accounts[Math.floor(Math.random() * ledger.accounts.length)];
    const lower = ledger.ackedSum.get(account);
    const sentAt = Date.now();
    const res = await request('GET', `/accounts/${account}`);
    const upper = ledger.sentSum.get(account);
    let cls = 'unexpected';
    let balance;
    if (res.status === 200 && res.json?.account_id === account && Number.isSafeInteger(res.json?.balance)) {
      balance = res.json.balance;
      if (balance > upper) cls = 'unexpected';
      else if (balance < lower) cls = 'stale';
      else cls = 'ok';
    } else if (res.status === 404 && lower === 0 && typeof res.json?.error === 'string') {
      cls = 'ok';
    } else if (unavailableClass(res)) {
      cls = unavailableClass(res);
    }
    record('get-account', res, { cls, sentAt, account, balance, lower, upper });
  }

  async function readTransaction() {
    const recent = ledger.ackedList.slice(-200);
    if (!recent.length) return readAccount();
    const op = recent[Math.floor(Math.random() * recent.length)];
    const sentAt = Date.now();
    const res = await request('GET', `/transactions/${op.acked.transaction_id}`);
    let cls = 'unexpected';
    if (res.status === 200) {
      try {
        assert.deepEqual(res.json, op.acked);
        cls = 'ok';
      } catch {
        cls = 'unexpected';
      }
    } else if (unavailableClass(res)) {
      cls = unavailableClass(res);
    }
    record('get-transaction', res, { cls, sentAt });
  }

  async function worker(readOnly) {
    while (!stopping && Date.now() - t0 < durationMs && started < count) {
      started += 1;
      const dice = Math.random();
      if (readOnly) {
        if (dice < 0.8) await readAccount();
        else await readTransaction();
      } else if (dice < readRatio) await readAccount();
      else if (dice < readRatio + txReadRatio) await readTransaction();
      else await post();
      if (thinkMs) await sleep(thinkMs);
    }
  }

  const done = Promise.all([
    ...Array.from({ length: workers }, () => worker(false)),
    ...Array.from({ length: readers }, () => worker(true)),
  ]).then(() => summarize(responses, Date.now() - t0));
  return {
    ledger,
    responses,
    t0,
    done,
    async stop() {
      stopping = true;
      return done;
    },
  };
}

/** Counts of a load's responses by kind, status and classification, and latency figures. */
export function summarize(responses, elapsedMs) {
  const byKind = {};
  for (const r of responses) {
    const k = (byKind[r.kind] ??= { total: 0, status: {}, cls: {}, maxMs: 0 });
    k.total += 1;
    k.status[r.status] = (k.status[r.status] ?? 0) + 1;
    k.cls[r.cls] = (k.cls[r.cls] ?? 0) + 1;
    k.maxMs = Math.max(k.maxMs, Math.round(r.ms));
  }
  return { elapsedMs, total: responses.length, byKind };
}

/**
 * Reads that showed a balance older than a write acknowledged before the read was sent. Every
 * 201 (first attempt or idempotent replay) is published before it is answered, so there must be
 * none outside a documented Redis write pause.
 */
export function staleReads(load) {
  return load.responses.filter((r) => r.cls === 'stale');
}

/** Responses that are neither correct nor a documented 503 (stale reads listed separately). */
export function unexpected(responses) {
  return responses.filter((r) => r.cls === 'unexpected');
}

export function formatResponses(list, max = 10) {
  return list
    .slice(0, max)
    .map((r) => `${r.kind} at ${r.at} ms: ${r.status}${r.error ? ` ${r.error}` : ''} ${r.text ?? ''}${r.balance !== undefined ? ` balance=${r.balance} bounds=[${r.lower},${r.upper}]` : ''}`)
    .join('\n');
}

/**
 * The [first sent, last answered] (ms since the load's t0) of the "retry later" answers
 * (documented 503s) in `responses`, with their count.
 */
export function window503(responses, kinds) {
  const list = responses.filter((r) => r.cls === 'documented-503' && (!kinds || kinds.includes(r.kind)));
  if (!list.length) return { count: 0, firstAt: undefined, lastAt: undefined, lengthMs: 0 };
  const firstAt = Math.min(...list.map((r) => r.sentAt ?? r.at));
  const lastAt = Math.max(...list.map((r) => r.at));
  return { count: list.length, firstAt, lastAt, lengthMs: lastAt - firstAt };
}

// --- invariants ------------------------------------------------------------------------------

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await fn(items[i], i);
      }
    }),
  );
  return results;
}

/** Accounts whose balance differs from the sum of their transactions (SQL; must be 0). */
export async function unbalancedAccounts() {
  return Number(
    await sqlValue(
      'SELECT count(*) FROM accounts a WHERE balance <> (SELECT COALESCE(sum(amount),0) FROM transactions t WHERE t.account_id=a.account_id)',
    ),
  );
}

/** Waits until every account's balance read through nginx equals its SQL balance; returns ms taken. */
export async function waitViewsConverge({ timeoutMs = 15_000 } = {}) {
  const started = Date.now();
  const rows = await sql('SELECT account_id, balance FROM accounts');
  const pending = new Map(rows.map(([id, balance]) => [id, Number(balance)]));
  let last = new Map();
  for (;;) {
    await pool([...pending.keys()], 16, async (id) => {
      const res = await request('GET', `/accounts/${id}`);
      last.set(id, describeResponse(res));
      if (res.status === 200 && res.json?.balance === pending.get(id)) pending.delete(id);
    });
    if (!pending.size) return Date.now() - started;
    if (Date.now() - started > timeoutMs) {
      const detail = [...pending.entries()].slice(0, 5).map(([id, b]) => `${id}: SQL ${b}, nginx ${last.get(id)}`).join('\n');
      assert.fail(`${pending.size} account(s) still read differently through nginx than in SQL after ${timeoutMs} ms:\n${detail}`);
    }
    await sleep(100);
  }
}

/** Waits until the outbox is empty (everything published to Redis); returns ms taken. */
export async function waitOutboxDrained({ timeoutMs = 15_000 } = {}) {
  const started = Date.now();
  await waitFor('the publish outbox to drain', async () => Number(await sqlValue('SELECT count(*) FROM publish_outbox')) === 0, { timeoutMs, intervalMs: 100 });
  return Date.now() - started;
}

/**
 * The invariants every fault test ends with:
 *   - every acknowledged transaction_id is in the database exactly once, with its account,
 *     amount and Idempotency-Key, and no key is in the database twice (no duplicate from a
 *     retry); no transaction the clients did not send;
 *   - balance = sum(amount) for every account (SQL);
 *   - through nginx, every account's balance equals its SQL balance (allowing the repair
 *     loop `convergeMs` to catch up), every acknowledged transaction reads back identical, and
 *     GET /transactions lists exactly the database's transactions;
 *   - the publish outbox drains (everything committed reaches Redis).
 * Returns figures: { acked, committed, committedUnacked, convergeMs, outboxDrainMs }.
 */
export async function assertInvariants(ledgerOrLedgers, { convergeMs = 15_000, extraTransactions = 0, checkList = true, outboxDrains = true } = {}) {
  const ledgers = Array.isArray(ledgerOrLedgers) ? ledgerOrLedgers : [ledgerOrLedgers];
  const ledger = {
    ops: new Map(ledgers.flatMap((l) => [...l.ops.entries()])),
    acked: () => ledgers.flatMap((l) => l.acked()),
  };
  const rows = await sql('SELECT transaction_id, account_id, amount, idempotency_key FROM transactions');
  const byId = new Map();
  const byKey = new Map();
  let withoutKey = 0;
  for (const [id, account, amount, key] of rows) {
    assert.ok(!byId.has(id), `transaction ${id} is in the database twice`);
    byId.set(id, { id, account, amount: Number(amount), key });
    if (key === '') withoutKey += 1;
    else {
      assert.ok(!byKey.has(key), `Idempotency-Key ${key} applied twice (${byKey.get(key)?.id} and ${id})`);
      byKey.set(key, { id, account, amount: Number(amount) });
    }
  }
  const acked = ledger.acked();
  const missing = [];
  for (const op of acked) {
    const row = byId.get(op.acked.transaction_id);
    if (!row) {
      missing.push(op);
      continue;
    }
    assert.equal(row.account, op.account, `transaction ${row.id}: account`);
    assert.equal(row.amount, op.amount, `transaction ${row.id}: amount`);
    assert.equal(row.key, op.key, `transaction ${row.id}: idempotency key`);
  }
  assert.equal(missing.length, 0, `${missing.length} acknowledged transaction(s) missing from the database, e.g. ${JSON.stringify(missing[0]?.acked)}`);
  let committedUnacked = 0;
  for (const [key, row] of byKey) {
    const op = ledger.ops.get(key);
    if (!op) continue;
    assert.equal(row.account, op.account, `key ${key}: account`);
    assert.equal(row.amount, op.amount, `key ${key}: amount`);
    if (!op.acked) committedUnacked += 1;
  }
  const foreign = [...byKey.keys()].filter((key) => !ledger.ops.has(key)).length + withoutKey;
  assert.ok(foreign <= extraTransactions, `${foreign} transaction(s) in the database that no client sent (expected at most ${extraTransactions})`);

  assert.equal(await unbalancedAccounts(), 0, 'accounts whose balance differs from the sum of their amounts');

  // Redis catches up with PostgreSQL (the repair loop), then every read through nginx agrees.
  const converge = await waitViewsConverge({ timeoutMs: convergeMs });
  const badReads = [];
  await pool(acked, 16, async (op) => {
    const res = await request('GET', `/transactions/${op.acked.transaction_id}`);
    try {
      assert.equal(res.status, 200);
      assert.deepEqual(res.json, op.acked);
    } catch {
      badReads.push(`${op.acked.transaction_id}: ${describeResponse(res)} (acknowledged ${JSON.stringify(op.acked)})`);
    }
  });
  assert.equal(badReads.length, 0, `acknowledged transactions not readable through nginx:\n${badReads.slice(0, 5).join('\n')}`);
  if (checkList) {
    const res = await request('GET', '/transactions', { timeoutMs: 60_000 });
    assert.equal(res.status, 200, `GET /transactions: ${describeResponse(res)}`);
    assert.ok(Array.isArray(res.json), 'GET /transactions is a JSON array');
    assert.equal(res.json.length, rows.length, 'GET /transactions lists every transaction of the database');
    assert.equal(new Set(res.json.map((t) => t.transaction_id)).size, rows.length, 'GET /transactions lists each transaction once');
  }
  // Nothing is left unpublished: the repair loop empties the outbox once Redis is reachable.
  const outboxDrainMs = outboxDrains ? await waitOutboxDrained({ timeoutMs: convergeMs }) : undefined;
  return { acked: acked.length, committed: rows.length, committedUnacked, convergeMs: converge, outboxDrainMs };
}

/**
 * POSTs one transaction with an Idempotency-Key through nginx, retrying the same key on 503 or
 * a network error until it is acknowledged (bounded); records it in `ledger`. Returns the op.
 */
export async function postAcked(ledger, account, amount, { timeoutMs = 60_000 } = {}) {
  const op = ledger.newOp(account, amount);
  const giveUpAt = Date.now() + timeoutMs;
  for (;;) {
    ledger.markSent(op);
    const res = await request('POST', '/transactions', {
      body: `{"account_id":"${account}","amount":${amount}}`,
      headers: { 'idempotency-key': op.key },
    });
    op.attempts.push({ status: res.status, ms: res.ms });
    if (res.status === 201) {
      assert.equal(res.json?.account_id, account, `POST answered for another account: ${res.text}`);
      assert.equal(res.json?.amount, amount, `POST answered another amount: ${res.text}`);
      ledger.markAcked(op, res.json, res);
      return op;
    }
    assert.ok(res.status === 0 || isRetryLater(res), `POST /transactions: neither 201 nor a documented 503: ${describeResponse(res)}`);
    assert.ok(Date.now() < giveUpAt, `POST /transactions not acknowledged within ${timeoutMs} ms: ${describeResponse(res)}`);
    await sleep(500);
  }
}

/** Fresh account ids. */
export function accounts(n) {
  return Array.from({ length: n }, () => randomUUID());
}
