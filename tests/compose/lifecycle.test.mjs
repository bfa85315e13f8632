// The stack's life cycle: data in the PostgreSQL volume survives `down` + `up` (Redis holds
// nothing durable and is refilled), and `down -v` removes everything the project made:
// containers, networks and volumes. Runs last: it ends with the stack gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PROJECT, SERVICES, compose, containers, docker, inspect, postTransaction, randomUUID, request, waitHealthy } from './stack.mjs';

const HEALTH_TIMEOUT = Number(process.env.COMPOSE_HEALTH_TIMEOUT ?? 180);

// Every volume the project's containers have mounted at some point of this file, named or
// anonymous (an image's VOLUME without a mount gets an unlabelled one, which a label filter
// would not see).
const mounted = new Set();
const noteVolumes = () => {
  for (const id of containers()) {
    for (const mount of inspect(id).Mounts) if (mount.Type === 'volume') mounted.add(mount.Name);
  }
};

test('a transaction written before down is there after up (the postgres-data volume)', async () => {
  const account = randomUUID();
  const post = await postTransaction(account, 42);
  assert.equal(post.status, 201);

  noteVolumes();
  compose(['down']);
  assert.deepEqual(containers(), [], 'containers left after down');
  compose(['up', '-d', ...SERVICES]);
  const seconds = await waitHealthy(containers(), HEALTH_TIMEOUT);
  console.log(`down, then up: healthy again after ${seconds.toFixed(1)} s`);
  noteVolumes();

  const tx = await request(`/transactions/${post.json.transaction_id}`);
  assert.equal(tx.status, 200, 'the transaction is gone');
  assert.deepEqual(tx.json, post.json);
  const acct = await request(`/accounts/${account}`);
  assert.equal(acct.status, 200);
  assert.equal(acct.json.balance, 42);
});

test('down -v leaves no container, network or volume of the project', () => {
  noteVolumes();
  assert.ok(mounted.size > 0, 'no volume was ever mounted: the check below would prove nothing');
  compose(['down', '-v', '--remove-orphans']);
  const label = `label=com.docker.compose.project=${PROJECT}`;
  const left = {
    containers: docker(['ps', '-a', '-q', '--filter', label]),
    networks: docker(['network', 'ls', '-q', '--filter', label]),
    volumes: docker(['volume', 'ls', '-q', '--filter', label]),
    // Also by name, in case something was made without the labels.
    named: docker(['volume', 'ls', '-q'])
      .concat('\n', docker(['network', 'ls', '--format', '{{.Name}}']))
      .split('\n')
      .filter((name) => name.startsWith(`${PROJECT}_`))
      .join(' '),
  };
  left.mounted = [...mounted].filter((name) => docker(['volume', 'inspect', name], { allowFailure: true }) !== null).join(' ');
  assert.deepEqual(left, { containers: '', networks: '', volumes: '', named: '', mounted: '' });
  console.log(`gone: ${mounted.size} volumes the containers had mounted, and every container and network`);
});
