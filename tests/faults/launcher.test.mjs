// The native launcher itself (scripts/launcher.sh, scripts/stack.sh = npm start / npm stop), on
// the fault-test stack's state folder and ports:
//   - kill -9 of the writer, the reader or nginx is followed by a working API within 3 s, with
//     no command (the supervisor restarts it, and logs the restart);
//   - `npm start` right after a crash never reports a dead service as running, and starts it;
//   - `npm stop` leaves nothing running.
// Every command runs as a Node child process, whose stdout and stderr are sockets (nginx cannot
// open /dev/stderr on them: the launcher must not depend on what its stdio is).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  Ledger,
  LOGS,
  PORTS,
  ROOT,
  STATE,
  accounts,
  figure,
  launcherEnv,
  nginx,
  postAcked,
  reader,
  request,
  run,
  sleep,
  startStack,
  stopStack,
  waitFor,
  writer,
} from './harness.mjs';
import { childrenOf, pidRuns, portAnswers, processesWith } from './lib/proc.mjs';

/** The bound: a killed part of the stack answers again within 3 s, unattended. */
const MAX_RECOVERY_MS = 3000;

/** scripts/stack.sh (what npm start and npm stop run) on this stack's state folder and ports. */
async function stackCommand(command) {
  const env = launcherEnv({ STACK_BUILD: 'no', STACK_MONITORING: 'no' });
  const result = await run('bash', [path.join(ROOT, 'scripts', 'stack.sh'), command], { env, timeoutMs: 180_000 });
  const output = `${result.stdout}${result.stderr}`;
  assert.equal(result.code, 0, `scripts/stack.sh ${command} failed (${result.code}):\n${output}`);
  return output;
}

/** Kills `instance` with SIGKILL and returns the ms until `works()` is true again (polled every 25 ms). */
async function recoveryAfterKill(instance, works) {
  const pid = instance.pid;
  assert.ok(pid, `${instance.name} runs before the kill`);
  const killedAt = Date.now();
  process.kill(pid, 'SIGKILL');
  await waitFor(`${instance.name} killed`, () => !instance.alive() || instance.pid !== pid, { timeoutMs: 5000, intervalMs: 5 });
  await waitFor(`the API to work again after kill -9 of ${instance.name}`, works, { timeoutMs: 30_000, intervalMs: 25 });
  const ms = Date.now() - killedAt;
  assert.notEqual(instance.pid, pid, `${instance.name} runs as a new process`);
  const supervisorLog = fs.readFileSync(path.join(LOGS, 'supervisor.log'), 'utf8');
  assert.match(supervisorLog, new RegExp(`${instance.name} \\(pid ${pid}\\) killed by SIGKILL .*restarting in`), 'the restart is logged');
  return ms;
}

describe('the native launcher', { timeout: 240_000 }, () => {
  const ledger = new Ledger(accounts(1));
  const [account] = ledger.accounts;

  before(async () => {
    await startStack();
    await postAcked(ledger, account, 7);
  });
  after(() => stopStack());

  const posts = async () => (await request('POST', '/transactions', { body: `{"account_id":"${account}","amount":1}` })).status === 201;
  const reads = async () => (await request('GET', `/accounts/${account}`)).status === 200;
  const both = async () => (await posts()) && (await reads());

  for (const [instance, works] of [
    [writer, posts],
    [reader, reads],
    [nginx, both],
  ]) {
    test(`kill -9 of ${instance.name}: the API works again within ${MAX_RECOVERY_MS} ms, no command given`, async () => {
      const oldWorkers = instance === nginx ? childrenOf(nginx.pid) : [];
      const ms = await recoveryAfterKill(instance, works);
      figure(`launcher.kill-9-${instance.name}.api-back-ms`, ms);
      assert.ok(ms <= MAX_RECOVERY_MS, `the API worked again ${ms} ms after kill -9 of the ${instance.name} (max ${MAX_RECOVERY_MS})`);
      if (instance === nginx) {
        // The killed master's workers do not linger (its process group is ended with it).
        assert.ok(oldWorkers.length > 0, 'the killed master had workers');
        assert.deepEqual(oldWorkers.filter((pid) => pidRuns(pid)), [], 'workers of the killed nginx master still run');
        const masters = processesWith(`-p ${STATE}/nginx/`).filter((p) => p.cmdline.includes('master'));
        assert.equal(masters.length, 1, `one nginx master: ${JSON.stringify(masters)}`);
        assert.ok(nginx.workersAlive(), 'the new master has workers');
      }
    });
  }

  test('npm start right after a crash restarts the dead service and never reports it as running', async () => {
    // A crash of the reader and of its supervisor (the OOM killer, say): only stale pid files remain.
    const readerPid = reader.pid;
    const supervisorPid = Number(fs.readFileSync(path.join(STATE, 'reader.supervisor.pid'), 'utf8'));
    process.kill(supervisorPid, 'SIGKILL');
    process.kill(readerPid, 'SIGKILL');
    await waitFor('the reader to be gone', () => !reader.alive(), { timeoutMs: 5000, intervalMs: 10 });
    const output = await stackCommand('start');
    figure('launcher.start-after-crash', output.split('\n').filter((line) => /reader/.test(line)).join(' | '));
    assert.doesNotMatch(output, /reader already running/, 'a dead reader reported as running');
    assert.doesNotMatch(output, new RegExp(`pid ${readerPid}\\b`), 'the dead pid is not reported');
    assert.match(output, /reader up on/);
    assert.match(output, /writer already running \(pid \d+\)/, 'the running writer is left alone');
    assert.ok(reader.alive() && reader.pid !== readerPid, 'a new reader runs');
    assert.ok(await reads(), 'GET /accounts works');

    // The service dies and npm start comes before its supervisor restarted it: not "running" either.
    const again = reader.pid;
    process.kill(again, 'SIGKILL');
    const second = await stackCommand('start');
    assert.doesNotMatch(second, new RegExp(`reader already running \\(pid ${again}\\)`), 'the killed reader reported as running');
    assert.ok(await reads(), 'GET /accounts works');
  });

  test('npm stop ends supervision and leaves nothing running', async () => {
    const output = await stackCommand('stop');
    figure('launcher.stop', output.trim().split('\n').join(' | '));
    await sleep(1500); // longer than a supervisor's restart delay: nothing comes back
    const left = processesWith(STATE).filter((p) => !p.cmdline.includes('postgres') && !p.cmdline.includes('redis-server'));
    assert.deepEqual(left, [], 'processes of the stack still running after npm stop');
    for (const port of [PORTS.proxy, PORTS.writer, PORTS.reader, PORTS.writerMetrics, PORTS.readerMetrics]) {
      assert.equal(await portAnswers(port), false, `port ${port} still answers after npm stop`);
    }
    assert.ok(!writer.alive() && !reader.alive() && !nginx.alive(), 'no instance is alive');
  });
});
