// The network split of docker-compose.yml (docs/containers.md, "Networks"), tried from inside:
// a throw-away busybox container on each network looks the other side's services up in Docker's
// DNS and tries a TCP connection to their real addresses (read from Docker, so a name that does
// not resolve is still tried). Each side also reaches a service of its own network the same
// way, so a broken probe cannot pass for isolation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SERVICES, addressOn, containers, onNetwork } from './stack.mjs';

// service -> [its network, the port it listens on]
const LISTENS = {
  postgres: ['app', 5432],
  redis: ['app', 6379],
  nginx: ['app', 8080],
  prometheus: ['monitoring', 9090],
  'node-exporter': ['monitoring', 9100],
  grafana: ['monitoring', 3000],
  writer: ['monitoring', 9181],
};

/** Runs the probes from `network`; returns { service: { resolves, connects } }. */
function probe(network, services) {
  const lines = services.map((service) => {
    const [home, port] = LISTENS[service];
    const ids = containers(service);
    // A service that is not running has no address; its name must still not resolve.
    const address = ids.length > 0 ? addressOn(ids[0], home) : '';
    return (
      `if nslookup ${service} >/dev/null 2>&1; then r=yes; else r=no; fi; ` +
      (address ? `if nc -w 2 ${address} ${port} -e true </dev/null >/dev/null 2>&1; then c=yes; else c=no; fi; ` : 'c=none; ') +
      `echo "${service} $r $c"`
    );
  });
  const result = onNetwork(network, lines.join('\n'));
  assert.ok(result.ok, `probe container on ${network} failed: ${result.output}`);
  const found = {};
  for (const line of result.output.split('\n')) {
    const [service, resolves, connects] = line.trim().split(/\s+/);
    found[service] = { resolves: resolves === 'yes', connects: connects === 'yes' };
  }
  console.log(`from ${network}:\n  ${result.output.replace(/\n/g, '\n  ')}   (service, resolves, connects)`);
  return found;
}

test('from the monitoring network, PostgreSQL, Redis and nginx neither resolve nor connect; the writer does', () => {
  const found = probe('monitoring', ['postgres', 'redis', 'nginx', 'writer']);
  assert.deepEqual(found.writer, { resolves: true, connects: true }, 'the probe cannot reach writer:9181 on its own network');
  for (const service of ['postgres', 'redis', 'nginx']) {
    assert.deepEqual(found[service], { resolves: false, connects: false }, `${service} is reachable from monitoring`);
  }
});

test('from the application network, Prometheus, node-exporter and Grafana neither resolve nor connect; PostgreSQL does', () => {
  const found = probe('app', ['prometheus', 'node-exporter', 'grafana', 'postgres']);
  assert.deepEqual(found.postgres, { resolves: true, connects: true }, 'the probe cannot reach postgres:5432 on its own network');
  for (const service of ['prometheus', 'node-exporter', 'grafana']) {
    assert.equal(found[service].resolves, false, `${service} resolves from app`);
    assert.equal(found[service].connects, false, `${service} accepts connections from app`);
  }
  if (!SERVICES.includes('grafana')) {
    console.log('grafana is not running (no image): only that its name does not resolve from app was checked');
  }
});
