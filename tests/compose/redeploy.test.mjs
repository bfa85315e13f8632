// A redeploy of the services alone: `up -d --force-recreate --no-deps writer reader` replaces
// both containers (new addresses on the networks) and leaves nginx running as it was. Within
// 10 s of that command returning, a POST and the GETs that read it back must succeed through
// nginx, with nginx neither restarted nor reloaded by anyone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addressOn, attempt, compose, containers, docker, inspect, postTransaction, randomUUID, sleep } from './stack.mjs';

const LIMIT_SECONDS = 10;

/** Polls POST then GET (account and transaction) until all succeed or the limit passes. */
async function firstSuccess(since) {
  const account = randomUUID();
  const seen = [];
  let balance = 0;
  while ((Date.now() - since) / 1000 <= LIMIT_SECONDS) {
    const post = await attempt('/transactions', { method: 'POST', body: { account_id: account, amount: 5 } });
    seen.push(`POST ${post.status}`);
    if (post.status === 201) {
      balance += 5;
      const tx = await attempt(`/transactions/${post.json.transaction_id}`);
      const acct = await attempt(`/accounts/${account}`);
      seen.push(`GET tx ${tx.status}`, `GET account ${acct.status}`);
      if (tx.status === 200 && acct.status === 200 && acct.json.balance === balance) {
        return { seconds: (Date.now() - since) / 1000, seen };
      }
    }
    await sleep(250);
  }
  return { seconds: null, seen };
}

const summary = (seen) => {
  const counts = new Map();
  for (const s of seen) counts.set(s, (counts.get(s) ?? 0) + 1);
  return [...counts].map(([s, n]) => `${s} x${n}`).join(', ');
};

test(`after up -d --force-recreate --no-deps writer reader, POST and GET succeed within ${LIMIT_SECONDS} s, nginx untouched`, async () => {
  const [nginx] = containers('nginx');
  const nginxBefore = inspect(nginx).State;
  const before = { writer: containers('writer'), reader: containers('reader') };
  const addressesBefore = [...before.writer, ...before.reader].map((id) => addressOn(id, 'app'));
  assert.equal((await postTransaction(randomUUID(), 1)).status, 201, 'POST before the redeploy');

  // Frees the app network's first address (scripts/test-compose.sh says why), so that the new
  // containers do not simply get their old addresses back.
  if (process.env.ADDRESS_HOLDER) docker(['rm', '-f', process.env.ADDRESS_HOLDER], { allowFailure: true });
  compose(['up', '-d', '--force-recreate', '--no-deps', 'writer', 'reader']);
  const returned = Date.now();
  const result = await firstSuccess(returned);
  console.log(`requests after up returned: ${summary(result.seen)}`);

  const after = { writer: containers('writer'), reader: containers('reader') };
  const addressesAfter = [...after.writer, ...after.reader].map((id) => addressOn(id, 'app'));
  console.log(`app addresses (writer, reader): before ${addressesBefore.join(', ')}; after ${addressesAfter.join(', ')}`);
  assert.notDeepEqual(after, before, 'writer and reader were not recreated');
  assert.ok(addressesAfter.some((a) => !addressesBefore.includes(a)), 'no container came back on a new address: this proves nothing');

  const nginxAfter = inspect(nginx).State;
  assert.equal(containers('nginx')[0], nginx, 'nginx was replaced');
  assert.equal(nginxAfter.StartedAt, nginxBefore.StartedAt, 'nginx was restarted');
  assert.ok(nginxAfter.Running, 'nginx is not running');

  assert.ok(result.seconds !== null, `no successful POST + GET within ${LIMIT_SECONDS} s of the redeploy`);
  console.log(`first successful POST + GET ${result.seconds.toFixed(1)} s after up returned`);
});
