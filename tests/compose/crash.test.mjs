// A crash, not a stop: SIGKILL to the writer's process from the host (its PID as Docker reports
// it). `docker kill` or `docker stop` would count as a manual stop, after which
// `restart: unless-stopped` leaves the container down; a crash must bring it back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { containers, inspect, postTransaction, randomUUID, sleep, waitHealthy } from './stack.mjs';

const LIMIT_SECONDS = 90;

for (const service of ['writer', 'postgres']) {
  test(`kill -9 of the ${service}'s process: Docker restarts it, healthy again within ${LIMIT_SECONDS} s, and a POST succeeds`, async () => {
    const [id] = containers(service);
    const before = inspect(id);
    assert.ok(before.State.Pid > 0, `${service} has no process`);
    process.kill(before.State.Pid, 'SIGKILL');
    const killed = Date.now();

    // First the restart (a new process), then health.
    for (;;) {
      const now = inspect(id);
      if (now.RestartCount > before.RestartCount && now.State.Running && now.State.Pid !== before.State.Pid) break;
      assert.ok(Date.now() - killed < LIMIT_SECONDS * 1000, `${service} was not restarted (${now.State.Status})`);
      await sleep(250);
    }
    await waitHealthy([id], LIMIT_SECONDS - (Date.now() - killed) / 1000);
    const seconds = (Date.now() - killed) / 1000;

    // The whole path works again (nginx, writer, PostgreSQL); allow the services a moment to
    // reconnect after PostgreSQL's restart.
    let status = 0;
    for (let i = 0; i < 40 && status !== 201; i += 1) {
      status = (await postTransaction(randomUUID(), 1).catch(() => ({ status: 0 }))).status;
      if (status !== 201) await sleep(250);
    }
    assert.equal(status, 201, `POST through nginx after the ${service} crash`);
    console.log(`${service}: restarted (RestartCount ${before.RestartCount} -> ${inspect(id).RestartCount}), healthy ${seconds.toFixed(1)} s after the kill`);
  });
}
