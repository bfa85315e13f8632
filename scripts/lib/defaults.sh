# The one source of the stacks' default ports and addresses. Plain NAME=value lines, nothing
# else: sourced by the shell scripts (scripts/lib/common.sh) and parsed by the Node tests
# (tests/faults/lib/config.mjs), so a port is written down once. Each script lets the variable
# of the same name without DEFAULT_ (e.g. PROXY_PORT) override it.

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
DEFAULT_DATABASE_URL=postgres://postgres@127.0.0.1:5432/transactions
DEFAULT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/transactions_test
DEFAULT_REDIS_URL=redis://127.0.0.1:6379/0

# The fault-test stack (tests/faults/): its own PostgreSQL and Redis, and the same launcher on
# other ports; FAULTS_PORT_OFFSET moves them all. Every listening port of a test stays below
# Linux's ephemeral range (32768-60999): there, a client connection's source port, or its
# TIME_WAIT, can hold the port for a minute and the server cannot bind (seen: PostgreSQL on
# the old 55432 failed every fault test of a run with 'Address already in use').
DEFAULT_FAULTS_POSTGRES_PORT=15432
DEFAULT_FAULTS_REDIS_PORT=16379
DEFAULT_FAULTS_PROXY_PORT=18080
DEFAULT_FAULTS_WRITER_PORT=18081
DEFAULT_FAULTS_READER_PORT=18082
DEFAULT_FAULTS_WRITER_METRICS_PORT=19181
DEFAULT_FAULTS_READER_METRICS_PORT=19182

# Supervision (scripts/lib/supervise.sh): the first restart after a crash waits this long;
# each further crash within SUPERVISE_STABLE_MS of its start doubles the wait, up to the cap.
DEFAULT_SUPERVISE_RESTART_MS=500
DEFAULT_SUPERVISE_MAX_RESTART_MS=8000
DEFAULT_SUPERVISE_STABLE_MS=10000
