// The fault-test harness: a complete, private copy of the stack (PostgreSQL, Redis, writer,
// reader, nginx) on its own ports, that the tests may break at will, plus a bounded client loop
// and the invariant checker. Built-ins only (node:child_process, node:net, global fetch).
//
//   part        port    lives in
//   PostgreSQL  15432   .stack/faults/pg        (initdb'd here, run as the `postgres` user)
//   Redis       16379   .stack/faults/redis     (no persistence: a restart comes back empty)
//   nginx       18080   .stack/faults/nginx     (the repository's nginx/nginx.conf, own env/)
//   writer      18081   metrics 19181           (release binary, copied to .stack/faults/bin)
//   reader      18082   metrics 19182
//
// (Ports: scripts/lib/defaults.sh, moved by FAULTS_PORT_OFFSET.) The shared PostgreSQL (5432),
// Redis (6379) and the main stack (8080-8082) are never touched. Writer, reader and nginx are
// run by the project's launcher (scripts/launcher.sh), supervised as under `npm start`, with
// .stack/faults as its state folder; `cleanupStale()` removes what an aborted earlier run left.
//
// The tests import everything from here; it lives in lib/ by concern:
//   config.mjs       paths, ports, figure() and log()
//   proc.mjs         running commands, process liveness, waitFor()
//   datastores.mjs   the private PostgreSQL and Redis, SQL helpers, row locks held on purpose
//   stack.mjs        the launcher, the writer/reader/nginx instances, startStack/stopStack
//   http.mjs         requests through nginx, classifying answers, raw HTTP over a socket
//   load.mjs         the clients' Ledger and the bounded client loop (startLoad)
//   invariants.mjs   assertInvariants() and what it needs

export { randomUUID } from 'node:crypto';
export { API, DATABASE, DATABASE_URL, LOGS, PORTS, REDIS_URL, ROOT, SHUTDOWN_TIMEOUT_MS, STATE, figure, log } from './lib/config.mjs';
export { must, run, waitFor } from './lib/proc.mjs';
export { holdAccountLock, pg, redis, sql, sqlValue, waitForLockWaiter } from './lib/datastores.mjs';
export { Instance, assertAllAlive, cleanupStale, launcher, launcherEnv, nginx, reader, sleep, startStack, stopStack, writer } from './lib/stack.mjs';
export * from './lib/http.mjs';
export * from './lib/load.mjs';
export * from './lib/invariants.mjs';
