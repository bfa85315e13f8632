// Prometheus (published on 127.0.0.1:9090) scrapes every writer, reader and node-exporter
// target of monitoring/prometheus/prometheus.yml over the monitoring network, and all are up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PROMETHEUS, sleep } from './stack.mjs';

// job -> the compose service on the monitoring network prometheus.yml names, and its port
// (writer and reader by DNS discovery: one target per container, named by its address).
const EXPECTED = { writer: ['writer', 9181], reader: ['reader', 9182], node: ['node-exporter', 9100] };

/** Whether a target is the service's: a static `service:port`, or a discovered `address:port` of that name. */
function isTargetOf(target, [service, port]) {
  const address = target.discoveredLabels.__address__;
  if (address === `${service}:${port}`) return true;
  const name = (target.discoveredLabels.__meta_dns_name ?? '').replace(/\.$/, '');
  return name === service && address.endsWith(`:${port}`);
}

test('Prometheus has its writer, reader and node-exporter targets, all up (within 30 s)', async () => {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const response = await fetch(`${PROMETHEUS}/api/v1/targets?state=active`, { signal: AbortSignal.timeout(5_000) });
    assert.equal(response.status, 200);
    const targets = (await response.json()).data.activeTargets;
    const problems = Object.entries(EXPECTED).flatMap(([job, address]) => {
      const found = targets.filter((t) => t.labels.job === job);
      if (found.length === 0) return [`no ${job} target`];
      return found.flatMap((t) => [
        ...(isTargetOf(t, address) ? [] : [`${job}: scrapes ${t.discoveredLabels.__address__}, not ${address.join(':')}`]),
        ...(t.health === 'up' ? [] : [`${job} ${t.scrapeUrl}: ${t.health} ${t.lastError}`]),
      ]);
    });
    if (problems.length === 0) {
      console.log(targets.map((t) => `${t.labels.job} ${t.scrapeUrl}: ${t.health}`).join('\n'));
      return;
    }
    if (Date.now() > deadline) assert.deepEqual(problems, []);
    await sleep(1000);
  }
});
