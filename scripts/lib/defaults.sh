# The one source of the stacks' default ports and addresses. Plain NAME=value lines, nothing
# else: sourced by the shell scripts (scripts/lib/common.sh), parsed by the Node tests
# (tests/lib/defaults.mjs) and by the Rust tests, so a port is written down once. Each script
# lets the variable of the same name without DEFAULT_ (e.g. PROXY_PORT) override it. Where a
# file cannot read this one (docker-compose.yml, .env.example, the Prometheus configuration,
# the Dockerfile), tests/ops/defaults.test.mjs checks that it says the same.

# The native stack (npm start): nginx, N writers and M readers on consecutive ports.
DEFAULT_PROXY_PORT=8080
DEFAULT_WRITER_PORT=8081
DEFAULT_READER_PORT=8082
DEFAULT_WRITER_METRICS_PORT=9181
DEFAULT_READER_METRICS_PORT=9182
DEFAULT_WRITERS=1
DEFAULT_READERS=1
DEFAULT_PROMETHEUS_PORT=9090
DEFAULT_NODE_EXPORTER_PORT=9100
# nginx's edge controls (nginx/edge/generate.sh, which restates these for the containers):
# rate limits off (RATE_LIMIT_RPS=0; RATE_LIMIT_BURST defaults to RATE_LIMIT_RPS), and when on,
# unpaged listings per client per minute and requests in progress per address. nginx's HTTPS
# port, when TLS_CERT and TLS_KEY are set (compose publishes it on the host's 127.0.0.1).
DEFAULT_RATE_LIMIT_RPS=0
DEFAULT_RATE_LIMIT_LIST_PER_MINUTE=12
DEFAULT_RATE_LIMIT_CONN=32
DEFAULT_TLS_PORT=8443
# docker compose publishes nginx, Prometheus and Grafana on 127.0.0.1 (PROXY_PORT,
# PROMETHEUS_PORT, GRAFANA_PORT in .env); inside the containers the ports are the ones above.
DEFAULT_GRAFANA_PORT=3000
DEFAULT_DATABASE_URL=postgres://postgres@127.0.0.1:5432/transactions
DEFAULT_REDIS_URL=redis://127.0.0.1:6379/0
# Every Redis the project starts: a memory cap, and the eviction policy for its key layout
# (volatile-lru evicts only keys with a time to live: the views, never the change stream or the
# views' generation; see docs/decisions.md).
DEFAULT_REDIS_MAXMEMORY=256mb
DEFAULT_REDIS_MAXMEMORY_POLICY=volatile-lru

# npm test's own native stack (scripts/test.sh, state in .stack/test): the same stack on ports
# of its own, with a fresh database and key prefix, so that it runs beside a stack of yours
# (npm start) and leaves it as it was. Then its compose run (scripts/test-compose.sh) publishes
# on ports of its own too. Every listening port of a test stays below Linux's ephemeral range
# (32768-60999): there, a client connection's source port, or its TIME_WAIT, can hold the port
# for a minute and the server cannot bind (seen: PostgreSQL on the old 55432 failed every fault
# test of a run with 'Address already in use').
DEFAULT_TEST_PROXY_PORT=21080
DEFAULT_TEST_WRITER_PORT=21081
DEFAULT_TEST_READER_PORT=21082
DEFAULT_TEST_WRITER_METRICS_PORT=21181
DEFAULT_TEST_READER_METRICS_PORT=21182
DEFAULT_TEST_PROMETHEUS_PORT=21090
DEFAULT_TEST_NODE_EXPORTER_PORT=21100
DEFAULT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/transactions_test
DEFAULT_TEST_REDIS_KEY_PREFIX=tm-test:
DEFAULT_COMPOSE_TEST_PROXY_PORT=22080
DEFAULT_COMPOSE_TEST_PROMETHEUS_PORT=22090
DEFAULT_COMPOSE_TEST_GRAFANA_PORT=22300
DEFAULT_COMPOSE_TEST_TLS_PORT=22443
# The edge controls' test (scripts/test-edge.sh): its native stack, HTTPS on the last port.
DEFAULT_EDGE_TEST_PROXY_PORT=23080
DEFAULT_EDGE_TEST_WRITER_PORT=23081
DEFAULT_EDGE_TEST_READER_PORT=23082
DEFAULT_EDGE_TEST_WRITER_METRICS_PORT=23181
DEFAULT_EDGE_TEST_READER_METRICS_PORT=23182
DEFAULT_EDGE_TEST_TLS_PORT=23443
DEFAULT_EDGE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/transactions_edge
DEFAULT_EDGE_TEST_REDIS_KEY_PREFIX=edge:test:

# The fault-test stack (tests/faults/): its own PostgreSQL and Redis, and the same launcher on
# other ports; FAULTS_PORT_OFFSET moves them all.
DEFAULT_FAULTS_POSTGRES_PORT=15432
DEFAULT_FAULTS_REDIS_PORT=16379
DEFAULT_FAULTS_PROXY_PORT=18080
DEFAULT_FAULTS_WRITER_PORT=18081
DEFAULT_FAULTS_READER_PORT=18082
DEFAULT_FAULTS_WRITER_METRICS_PORT=19181
DEFAULT_FAULTS_READER_METRICS_PORT=19182

# The encrypted-links test (tests/cqrs/tests/encrypted_links.rs): its own PostgreSQL (ssl=on)
# and Redis and Sentinel (TLS ports only), on a CA the test generates; TLS_TEST_POSTGRES_PORT,
# TLS_TEST_REDIS_PORT and TLS_TEST_SENTINEL_PORT override.
DEFAULT_TLS_TEST_POSTGRES_PORT=25432
DEFAULT_TLS_TEST_REDIS_PORT=25379
DEFAULT_TLS_TEST_SENTINEL_PORT=25380

# The benchmark's scratch reader over a million rows (bench/lib/big_list.sh).
DEFAULT_BENCH_BIG_READER_PORT=18182
DEFAULT_BENCH_BIG_READER_METRICS_PORT=19282

# The replicated topology (scripts/ha/defaults.env): every port of the stores and services is
# HA_PORT_BASE + a fixed offset, nginx on the native stack's proxy port (only one of the two
# runs at a time). Its private copies move the base: the benchmark's (nginx on base + 80), the
# topology test's and the stores test's. Each base owns base to base + 999 (offsets go to 600),
# all below Linux's ephemeral range like the test stacks' ports (above).
DEFAULT_HA_PORT_BASE=29000
DEFAULT_HA_BENCH_PORT_BASE=26000
DEFAULT_HA_TOPOLOGY_TEST_PORT_BASE=27000
DEFAULT_HA_STORES_TEST_PORT_BASE=28000

# Supervision (scripts/lib/supervise.sh): the first restart after a crash waits this long;
# each further crash within SUPERVISE_STABLE_MS of its start doubles the wait, up to the cap.
DEFAULT_SUPERVISE_RESTART_MS=500
DEFAULT_SUPERVISE_MAX_RESTART_MS=8000
DEFAULT_SUPERVISE_STABLE_MS=10000
