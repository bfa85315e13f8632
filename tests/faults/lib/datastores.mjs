// The fault-test stack's own PostgreSQL and Redis (never the shared ones): a private cluster
// initdb'd under .stack/faults/pg and run as the `postgres` user, a Redis without persistence,
// and SQL helpers over psql.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULTS } from '../../lib/defaults.mjs';
import { DATABASE, LOGS, PORTS, STATE, log } from './config.mjs';
import { cmdline, must, pidRuns, portAnswers, readPid, run, tail, terminatePid, waitFor } from './proc.mjs';

const PGDATA = path.join(STATE, 'pg');

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
      if (pid && pidRuns(pid)) throw new Error(`pg_ctl stop failed: ${result.stderr}${result.stdout}`);
    }
  },

  running() {
    const pid = readPid(path.join(PGDATA, 'postmaster.pid'));
    return Boolean(pid && pidRuns(pid));
  },

  /** Stops a cluster an aborted earlier run left running (a crash: WAL replay on the next start). */
  async stopStale() {
    if (!pg.running()) return;
    log(`stopping stale PostgreSQL (pid ${readPid(path.join(PGDATA, 'postmaster.pid'))})`);
    await pg.stop('immediate');
  },

  /** Drops and recreates the test database (the writer creates the schema on start). */
  async resetDatabase() {
    await must('psql', [...psqlArgs('postgres'), '-c', `DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`]);
    await must('psql', [...psqlArgs('postgres'), '-c', `CREATE DATABASE ${DATABASE}`]);
  },
};

// The database sql() runs on: the fault-test cluster's, unless a suite of another stack (the
// replicated topology's tests) names its own with useDatabaseUrl (a libpq URL, password included).
let databaseUrl;
export function useDatabaseUrl(url) {
  databaseUrl = url;
}

function psqlArgs(database = DATABASE) {
  const target = databaseUrl && database === DATABASE ? ['-d', databaseUrl] : ['-h', '127.0.0.1', '-p', String(PORTS.pg), '-U', 'postgres', '-d', database];
  return [...target, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-F', '\t'];
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
      '--maxmemory', process.env.REDIS_MAXMEMORY || DEFAULTS.REDIS_MAXMEMORY,
      '--maxmemory-policy', DEFAULTS.REDIS_MAXMEMORY_POLICY,
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
    if (pid && pidRuns(pid) && cmdline(pid).includes(`:${PORTS.redis}`)) {
      await terminatePid(pid, { signal: 'SIGTERM', timeoutMs: 10_000 });
    }
    fs.rmSync(redis.pidfile, { force: true });
    await waitFor('Redis to stop', async () => !(await portAnswers(PORTS.redis)), { timeoutMs: 10_000 });
  },

  /** Stops a Redis an aborted earlier run left running (its pid file, and its port in its command line). */
  async stopStale() {
    const pid = readPid(redis.pidfile);
    if (pid && pidRuns(pid) && cmdline(pid).includes(`:${PORTS.redis}`)) {
      log(`stopping stale Redis (pid ${pid})`);
      await terminatePid(pid, { signal: 'SIGTERM', timeoutMs: 10_000 });
    }
    fs.rmSync(redis.pidfile, { force: true });
  },

  async cli(...args) {
    return must('redis-cli', ['-h', '127.0.0.1', '-p', String(PORTS.redis), ...args], { timeoutMs: 10_000 });
  },
};
