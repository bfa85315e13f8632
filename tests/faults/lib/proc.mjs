// Running commands and looking at processes (built-ins only).

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** Runs a command to completion; never throws. Returns { code, stdout, stderr }. */
export function run(cmd, args, { timeoutMs = 60_000, input, env } = {}) {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { timeout: timeoutMs, maxBuffer: 256 * 1024 * 1024, killSignal: 'SIGKILL', env: env ?? process.env },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) || (error && !stdout ? String(error.message) : '') });
      },
    );
    if (input !== undefined) child.stdin.end(input);
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

/**
 * The process exists and is not a zombie (a zombie still answers kill(0)); with `exe`, it also
 * runs that executable (/proc/<pid>/exe; a replaced file reads "path (deleted)"), so a reused
 * pid is not taken for ours. The same rule as scripts/lib/process.sh.
 */
export function pidRuns(pid, exe) {
  if (!pid) return false;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return false;
    if (exe === undefined) return true;
    return fs.readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '') === exe;
  } catch {
    return false;
  }
}

export function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

export function readPid(file) {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function childrenOf(pid) {
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

/** Every running process whose command line contains `word` (e.g. a state folder). */
export function processesWith(word) {
  return fs
    .readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry) && Number(entry) !== process.pid)
    .map(Number)
    .filter((pid) => pidRuns(pid) && cmdline(pid).includes(word))
    .map((pid) => ({ pid, cmdline: cmdline(pid) }));
}

function signal(pid, name) {
  try {
    process.kill(pid, name);
    return true;
  } catch {
    return false;
  }
}

/** Sends `signal` to `pid`, waits up to `timeoutMs` for it to go, then SIGKILLs it and its children. */
export async function terminatePid(pid, { signal: first = 'SIGTERM', timeoutMs = 15_000 } = {}) {
  if (!pidRuns(pid) || !signal(pid, first)) return;
  const deadline = Date.now() + timeoutMs;
  while (pidRuns(pid) && Date.now() < deadline) await sleep(50);
  if (pidRuns(pid)) {
    for (const child of childrenOf(pid)) signal(child, 'SIGKILL');
    signal(pid, 'SIGKILL');
  }
}

/** Something accepts (or holds) TCP connections on 127.0.0.1:port. */
export function portAnswers(port) {
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

export function tail(file, lines = 20) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}
