// The store roles for Prometheus: a small HTTP server whose /metrics answers, at every scrape,
// what `npm run ha:status` sees at that moment (scripts/ha/status.mjs: a PostgreSQL node's own
// pg_is_in_recovery(), a Redis node's INFO). Neither PostgreSQL nor Redis speaks HTTP, and an
// exporter per engine (postgres_exporter, redis_exporter) would be two more daemons per node for
// one number each; HAProxy's /metrics has only its view of PostgreSQL, nothing of Redis.
//
//   node scripts/ha/roles-exporter.mjs PORT      (scripts/ha/topology.sh starts it)
//
// One gauge, one series per node, stable across failovers (the role is the value, not a label,
// so a swap does not end one series and start another):
//   ledger_store_role{store="postgres|redis",node="pg1",port="29432"} 2 = primary, 1 = replica,
//   0 = not answering. The Grafana panel "Store roles" maps the values to words.
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { componentsStatus, loadSettings } from './status.mjs';

const ROLE_VALUE = { primary: 2, replica: 1 };

export function renderRoles(components) {
  const lines = [
    '# HELP ledger_store_role Role of each replicated store node now: 2 = primary, 1 = replica, 0 = not answering.',
    '# TYPE ledger_store_role gauge',
  ];
  for (const c of components.filter((x) => x.kind === 'postgres' || x.kind === 'redis')) {
    lines.push(`ledger_store_role{store="${c.kind}",node="${c.name}",port="${c.port}"} ${ROLE_VALUE[c.role] ?? 0}`);
  }
  return `${lines.join('\n')}\n`;
}

async function main() {
  const port = Number(process.argv[2]);
  if (!Number.isInteger(port) || port <= 0) throw new Error('usage: roles-exporter.mjs PORT');
  const settings = await loadSettings();
  const server = http.createServer(async (req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    try {
      const { components } = await componentsStatus(settings);
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(renderRoles(components));
    } catch (error) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`${error.message}\n`);
    }
  });
  server.listen(port, '127.0.0.1');
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
