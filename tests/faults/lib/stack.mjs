// The fault-test stack: its own PostgreSQL and Redis (datastores.mjs), and writer, reader and
// nginx run by the project's one launcher (scripts/launcher.sh) with this stack's state folder
// and ports. The launcher supervises them: an instance that dies is restarted within a second.
// The tests talk to the instances through the launcher's files in STATE (scripts/lib/supervise.sh
// describes them): NAME.pid (the running instance), NAME.exit (how the last one ended) and
// NAME.hold (no restart while it exists: a deliberate stop).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  API,
  DATABASE_URL,
  LAUNCHER,
  LOGS,
  PORTS,
  REDIS_URL,
  SHUTDOWN_TIMEOUT_MS,
  STATE,
  TARGET_DIR,
  log,
} from './config.mjs';
import { pg, redis } from './datastores.mjs';
import { request } from './http.mjs';
import { childrenOf, pidRuns, portAnswers, readPid, run, tail, waitFor } from './proc.mjs';

/**
 * The launcher's environment for this stack: its state folder and ports, and everything the
 * services get (nothing else from this process's environment: e.g. npm test's
 * REDIS_KEY_PREFIX must not reach them). `env` adds variables for the services.
 */
export function launcherEnv(env = {}) {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? '/root',
    STACK_STATE_DIR: STATE,
    WRITERS: '1',
    READERS: '1',
    PROXY_PORT: String(PORTS.proxy),
    WRITER_PORT: String(PORTS.writer),
    READER_PORT: String(PORTS.reader),
    WRITER_METRICS_PORT: String(PORTS.writerMetrics),
    READER_METRICS_PORT: String(PORTS.readerMetrics),
    SERVICE_BINARIES: path.join(TARGET_DIR, 'release'),
    DATABASE_URL,
    REDIS_URL,
    LOG_FORMAT: 'text',
    RUST_LOG: 'info',
    SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    ...env,
  };
}

let servicesEnv = {};

/** Runs `scripts/launcher.sh <command>` for this stack; throws with its output if it fails. */
export async function launcher(command) {
  const result = await run('bash', [LAUNCHER, command], { env: launcherEnv(servicesEnv), timeoutMs: 240_000 });
  fs.appendFileSync(path.join(LOGS, 'launcher.log'), `\n===== ${new Date().toISOString()} launcher ${command} (exit ${result.code})\n${result.stdout}${result.stderr}`);
  if (result.code !== 0) throw new Error(`scripts/launcher.sh ${command} failed (${result.code}):\n${result.stdout}${result.stderr}`);
  return result.stdout;
}

function nginxExe() {
  for (const candidate of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx']) {
    if (fs.existsSync(candidate)) return fs.realpathSync(candidate);
  }
  return 'nginx';
}

/** One supervised instance: writer, reader or nginx. */
export class Instance {
  constructor(name, { port, metricsPort, exe }) {
    this.name = name;
    this.port = port;
    this.metricsPort = metricsPort;
    this.exe = exe;
    this.file = (suffix) => path.join(STATE, `${name}.${suffix}`);
    this.stoppedPid = undefined; // the last pid stop() or kill() saw go
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The running instance's pid, or undefined (dead, a zombie, or not ours). */
  get pid() {
    const pid = readPid(this.file('pid'));
    return pidRuns(pid, this.exe) ? pid : undefined;
  }

  alive() {
    return this.pid !== undefined;
  }

  /** How the last instance ended, as its supervisor recorded it: { pid, code, signal, at }. */
  lastExit() {
    try {
      const [pid, code, signal, at] = fs.readFileSync(this.file('exit'), 'utf8').trim().split(' ');
      return { pid: Number(pid), code: code === '-' ? null : Number(code), signal: signal === '-' ? null : signal, at: Number(at) };
    } catch {
      return undefined;
    }
  }

  /**
   * Sends `signal` and waits until the supervisor has reaped the instance (up to `timeoutMs`;
   * then SIGKILL and an error). Returns { exitMs, code, signal }, exitMs measured from the
   * signal. `hold`: the supervisor does not restart it until start(); otherwise (a crash) it
   * restarts it on its own.
   */
  async signal(signal, timeoutMs, { hold }) {
    const pid = this.pid;
    if (!pid) return { exitMs: 0, code: this.lastExit()?.code ?? null, signal: this.lastExit()?.signal ?? null };
    if (hold) fs.writeFileSync(this.file('hold'), `${signal} from tests/faults\n`);
    const sentAt = Date.now();
    process.kill(pid, signal);
    const exited = () => (this.lastExit()?.pid === pid ? this.lastExit() : undefined);
    try {
      await waitFor(`${this.name} (pid ${pid}) to exit`, exited, { timeoutMs, intervalMs: 10 });
    } catch {
      process.kill(pid, 'SIGKILL');
      await waitFor(`${this.name} (pid ${pid}) to exit after SIGKILL`, exited, { timeoutMs: 10_000, intervalMs: 10 });
      throw new Error(`${this.name} did not exit within ${timeoutMs} ms of ${signal}; killed it`);
    }
    this.stoppedPid = pid;
    const exit = exited();
    return { exitMs: exit.at - sentAt, code: exit.code, signal: exit.signal };
  }

  /** A deliberate stop: `signal`, and no restart until start(). */
  async stop(signal = 'SIGTERM', timeoutMs = 20_000) {
    return this.signal(signal, timeoutMs, { hold: true });
  }

  /** A crash: SIGKILL, and the supervisor restarts it by itself. */
  async kill() {
    return this.signal('SIGKILL', 10_000, { hold: false });
  }

  /** Lets the supervisor (re)start the instance, and waits until a new one answers GET /ping. */
  async start() {
    fs.rmSync(this.file('hold'), { force: true });
    await waitFor(`the supervisor to start ${this.name} again`, () => this.pid !== undefined && this.pid !== this.stoppedPid, {
      timeoutMs: 30_000,
      intervalMs: 20,
    });
    await this.waitHealthy();
    return this;
  }

  async waitHealthy(timeoutMs = 90_000) {
    const logFile = path.join(LOGS, `${this.name}.log`);
    try {
      await waitFor(`${this.name} GET /ping`, async () => {
        const res = await fetch(`${this.url}/ping`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        return res.status === 200;
      }, { timeoutMs, intervalMs: 50 });
    } catch (error) {
      throw new Error(`${error.message}; see ${logFile} and ${LOGS}/supervisor.log\n${tail(logFile)}`);
    }
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

export const writer = new Instance('writer', { port: PORTS.writer, metricsPort: PORTS.writerMetrics, exe: path.join(STATE, 'bin', 'writer') });
export const reader = new Instance('reader', { port: PORTS.reader, metricsPort: PORTS.readerMetrics, exe: path.join(STATE, 'bin', 'reader') });
export const nginx = new Instance('nginx', { port: PORTS.proxy, exe: nginxExe() });
/** The master and at least one worker, all still alive. */
nginx.workersAlive = () => nginx.alive() && childrenOf(nginx.pid).some((pid) => pidRuns(pid));

/**
 * Stops whatever an earlier, aborted run left behind (the launcher finds its instances by pid
 * file, checking each is really its process; Redis and PostgreSQL likewise), then checks that
 * every port is free.
 */
export async function cleanupStale({ checkPorts = true } = {}) {
  fs.mkdirSync(LOGS, { recursive: true });
  await launcher('down');
  await redis.stopStale();
  await pg.stopStale();
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
  await pg.init();
  await pg.start();
  await pg.resetDatabase();
  await redis.start();
  servicesEnv = { ...env };
  await launcher('up'); // the writer first (it runs the migrations), the reader, nginx
  log(`fault-test stack up in ${Date.now() - started} ms (API ${API})`);
}

/** Stops everything startStack started; never throws (for `after` hooks). */
export async function stopStack() {
  const steps = [
    ['launcher down', () => launcher('down')],
    ['redis', () => redis.stop()],
    ['postgres', () => pg.stop('fast')],
  ];
  for (const [name, step] of steps) {
    try {
      await step();
    } catch (error) {
      log(`teardown of ${name}: ${error.message}`);
    }
  }
}

/** Asserts every part of the stack is still running (no crash), and answering. */
export async function assertAllAlive() {
  assert.ok(writer.alive(), 'the writer process is gone');
  assert.ok(reader.alive(), 'the reader process is gone');
  assert.ok(nginx.workersAlive(), 'nginx (master or workers) is gone');
  await writer.waitHealthy(10_000);
  await reader.waitHealthy(10_000);
  const res = await request('GET', '/ping');
  assert.equal(res.status, 200, `GET /ping through nginx: ${res.status} ${res.text}`);
}

export { sleep };
