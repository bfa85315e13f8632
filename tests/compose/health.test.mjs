// Every service that was brought up runs and reports healthy (its compose health check) within
// COMPOSE_HEALTH_TIMEOUT seconds of `up` (scripts/test-compose.sh passes the moment it ran).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PROJECT, SERVICES, containers, docker, waitHealthy } from './stack.mjs';

const TIMEOUT = Number(process.env.COMPOSE_HEALTH_TIMEOUT ?? 180);
const UP_AT = Number(process.env.COMPOSE_UP_AT ?? Date.now());

// Services that run once per `up` and exit (docker-compose.yml): done, with status 0.
const ONE_SHOT = ['db-roles'];

test('the one-shot services ran and succeeded (db-roles: the least-privilege roles)', () => {
  for (const service of ONE_SHOT.filter((name) => SERVICES.includes(name))) {
    const states = docker(['ps', '-a', '--filter', `label=com.docker.compose.project=${PROJECT}`,
      '--filter', `label=com.docker.compose.service=${service}`, '--format', '{{.Status}}']).trim();
    assert.match(states, /^Exited \(0\)/, `${service}: ${states}`);
  }
});

test(`every service has a container, and every container is healthy within ${TIMEOUT} s of up`, async () => {
  assert.ok(SERVICES.length > 0, 'COMPOSE_SERVICES is empty');
  const missing = SERVICES.filter((service) => !ONE_SHOT.includes(service) && containers(service).length === 0);
  assert.deepEqual(missing, [], 'services without a running container');
  const left = TIMEOUT - (Date.now() - UP_AT) / 1000;
  await waitHealthy(containers(), Math.max(left, 1));
  console.log(`healthy ${((Date.now() - UP_AT) / 1000).toFixed(1)} s after up: ${SERVICES.join(', ')}`);
});
