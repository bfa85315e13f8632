#!/usr/bin/env bash
# The compose stack, run for real (npm run test:compose): builds the images, brings up every
# service of docker-compose.yml that has an image, and checks it live, each check named:
#
#   healthy        every container healthy within COMPOSE_HEALTH_TIMEOUT s of `up`
#   API tests      api-tests/ through nginx on 127.0.0.1:PROXY_PORT
#   Prometheus     its writer, reader and node-exporter targets are up
#   dashboards     every dashboard query returns data (tests/monitoring/panels.test.mjs)
#   isolation      the network split, from throw-away containers on each network
#   redeploy       `up -d --force-recreate --no-deps writer reader`: POST + GET within 10 s
#   scale-out      2 writers, 3 readers: every instance serves, exact concurrent writes,
#                  read-your-writes
#   crash          kill -9 of a process from the host: restarted and healthy
#   life cycle     data survives down + up; down -v leaves nothing behind
#
# (tests/compose/*.test.mjs hold the checks; tests/compose/stack.mjs says how they find the
# containers.) The stack is torn down (`down -v`) when the script exits, also when a check
# fails or the run is interrupted.
#
# Before that, on Debian as root (or with password-less sudo), it installs what is missing
# (docker.io, docker-compose, debootstrap), starts dockerd if none answers, and gets the images:
# those present are used; else, with a reachable registry, pulled; else built as local
# stand-ins by ../shared/offline-images/build.sh (OFFLINE_IMAGES_DIR). A service whose image
# cannot be had (Grafana, offline) is left out, and the output says so.
#
# Ports: the stack publishes nginx, Prometheus and Grafana on 127.0.0.1 on ports of its own
# (PROXY_PORT, PROMETHEUS_PORT, GRAFANA_PORT, TLS_PORT = scripts/lib/defaults.sh's DEFAULT_COMPOSE_TEST_*;
# docker-compose.yml's defaults are 8080, 9090 and 3000), so a stack of yours (npm start, or
# compose as `ledger`) keeps running meanwhile. Two runs of this script from two checkouts
# would collide on them: everything from `up` to the teardown holds /tmp/tm-ports.lock
# (TM_PORTS_LOCK), taken after the image build. A caller that already holds it
# (`flock /tmp/tm-ports.lock npm test`) is recognised and not waited for.
#
# Environment: COMPOSE_TEST_PROJECT (ledger-test: not the `ledger` of .env.example, so the
# test never touches a stack of yours), COMPOSE_HEALTH_TIMEOUT (180), COMPOSE_TEST_IMAGES
# (auto | registry | standins), OFFLINE_IMAGES_DIR (../shared/offline-images, relative to the
# project root), COMPOSE_TEST_CACHE (~/.cache/transaction-api/compose-test), DOCKERD_LOG
# (/var/log/dockerd.log), TM_PORTS_LOCK.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PROJECT="${COMPOSE_TEST_PROJECT:-ledger-test}"
HEALTH_TIMEOUT="${COMPOSE_HEALTH_TIMEOUT:-180}"
IMAGES_FROM="${COMPOSE_TEST_IMAGES:-auto}"
# The stand-in builder: OFFLINE_IMAGES_DIR, else ../shared/offline-images beside the checkout,
# else the machine's shared folder (/work/shared, where a CI clone may sit elsewhere).
OFFLINE_IMAGES="${OFFLINE_IMAGES_DIR:-../shared/offline-images}"
if [ -z "${OFFLINE_IMAGES_DIR:-}" ] && [ ! -f "$OFFLINE_IMAGES/build.sh" ] && [ -f /work/shared/offline-images/build.sh ]; then
  OFFLINE_IMAGES=/work/shared/offline-images
fi
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
LOCK="${TM_PORTS_LOCK:-/tmp/tm-ports.lock}"
# Shared by every checkout on this machine (like .ci/run's cargo cache): what the stand-in
# builder could not build, so that a run does not rebuild every stand-in to learn it again.
STATE_DIR="${COMPOSE_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/transaction-api/compose-test}"
# The classic builder: Compose 1.29 has no other, and BuildKit would look registries up.
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
export COMPOSE_PROJECT_NAME="$PROJECT"
# Throw-away containers (network probes, the address placeholder) use the Dockerfile's busybox.
BUSYBOX_IMAGE="$(sed -nE 's/^FROM[[:space:]]+(busybox:[^[:space:]]+).*/\1/p' docker/service.Dockerfile | head -n 1)"
export BUSYBOX_IMAGE="${BUSYBOX_IMAGE:-busybox:1.37.0-musl}"
export ADDRESS_HOLDER="${PROJECT}-address-holder"
STARTED=$(date +%s)

TAG=test-compose
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# docker-compose.yml publishes on ${PROXY_PORT:-8080} and the like: the test's own ports.
use_port_set COMPOSE_TEST_
# docker-compose.yml has no default passwords: fresh ones for this run, exported, so they win
# over a .env of yours (scripts/lib/roles.sh lists them).
# shellcheck source=scripts/lib/roles.sh
. "$ROOT/scripts/lib/roles.sh"
for name in $COMPOSE_PASSWORDS; do export "$name=$(new_password)"; done
export API_URL="http://127.0.0.1:$PROXY_PORT" PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT"
elapsed() { echo "$(($(date +%s) - STARTED)) s"; }

# --- tools and the Docker daemon ---------------------------------------------------------------

COMPOSE=()
ensure_tools() {
  local missing=()
  command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  # Compose v2 (the docker plugin) when present, else Compose 1.29 (Debian 12's docker-compose).
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
  else COMPOSE=(docker-compose)
  fi
  export COMPOSE_CMD="${COMPOSE[*]}"
  say "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" version | head -n 1))"
  ensure_node_modules # the yaml package (a devDependency) reads the resolved compose file
}

ensure_dockerd() {
  if docker info >/dev/null 2>&1; then
    say "docker: engine $(docker version --format '{{.Server.Version}}') answers"
    return 0
  fi
  if pgrep -x dockerd >/dev/null 2>&1; then
    # Starting (or stuck): never start a second one beside it.
    say "a dockerd process runs but does not answer yet; waiting up to 30 s"
    wait_until 30 docker info && return 0
    die "dockerd runs (pid $(pgrep -x dockerd | tr '\n' ' ')) but does not answer on its socket; see its log"
  fi
  can_be_root || die "no Docker daemon answers, and starting one needs root (or start it yourself)"
  # A pid file left by a daemon that died would stop the new one from starting.
  local pidfile=/var/run/docker.pid
  if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
    as_root rm -f "$pidfile"
  fi
  say "starting dockerd (log: $DOCKERD_LOG); it keeps running after this script"
  as_root sh -c "setsid dockerd >>'$DOCKERD_LOG' 2>&1 </dev/null &" || die "could not start dockerd"
  if wait_until 30 docker info; then
    say "docker: engine $(docker version --format '{{.Server.Version}}') started"
    return 0
  fi
  tail -n 20 "$DOCKERD_LOG" >&2
  # Leave no half-started daemon behind: stop the one started here.
  local pid
  pid="$(pgrep -x dockerd | head -n 1)"
  [ -n "$pid" ] && as_root kill "$pid"
  die "dockerd did not answer within 30 s (log above: $DOCKERD_LOG)"
}

# --- images ------------------------------------------------------------------------------------

# "service image built|pulled" per service of the resolved compose file.
service_images() {
  "${COMPOSE[@]}" config | node --input-type=module -e '
    import { parse } from "yaml";
    let text = ""; for await (const chunk of process.stdin) text += chunk;
    for (const [name, s] of Object.entries(parse(text).services ?? {}))
      console.log(name, s.image ?? "-", s.build ? "built" : "pulled");'
}

registry_reachable() {
  # Any HTTP answer (401 without credentials) means Docker Hub, where every image here lives,
  # can be reached.
  local code
  code="$(curl -sS -o /dev/null -m 5 -w '%{http_code}' https://registry-1.docker.io/v2/ 2>/dev/null)"
  [ -n "$code" ] && [ "$code" != 000 ]
}

build_standins() {
  local builder="$OFFLINE_IMAGES/build.sh"
  [ -f "$builder" ] || die "no container registry is reachable and there is no $builder to build local stand-ins.
  Needed: one of
    - a reachable registry (Docker Hub), or the images loaded beforehand (docker load), or
    - the offline stand-in builder: a directory with build.sh (OFFLINE_IMAGES_DIR, now
      '$OFFLINE_IMAGES', relative to $ROOT), plus debootstrap, root, and a local Rust
      toolchain matching the Dockerfile's rust image."
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  # build.sh finds the Debian mirror with `grep ... /etc/apt/sources.list ...` under pipefail,
  # which fails when that file is absent (deb822-only systems such as a fresh Debian 12). An
  # empty file is what apt itself accepts as "no sources here".
  if [ ! -e /etc/apt/sources.list ] && ! docker image inspect local/bookworm:base >/dev/null 2>&1; then
    say "creating an empty /etc/apt/sources.list (the stand-in builder reads it; sources are in sources.list.d)"
    as_root sh -c 'echo "# Sources are in /etc/apt/sources.list.d/." >/etc/apt/sources.list' || die "cannot create /etc/apt/sources.list"
  fi
  say "building local stand-ins: bash $OFFLINE_IMAGES/build.sh ."
  local out
  out="$(as_root env DOCKER=docker bash "$builder" . 2>&1)"
  local status=$?
  printf '%s\n' "$out"
  [ "$status" = 0 ] || die "the stand-in build failed (output above)"
  # Remember which images have no stand-in, so that the next run does not rebuild everything
  # only to learn that again (until build.sh changes).
  mkdir -p "$STATE_DIR"
  { sha256sum <"$builder"; awk '$1 == "NO" && $2 == "STAND-IN" { print $3 }' <<<"$out"; } >"$STATE_DIR/no-standin"
}

# True when every image named is one the stand-in builder, as of its current version, said it
# has no recipe for.
known_without_standin() { # images...
  local builder="$OFFLINE_IMAGES/build.sh" known image
  [ -f "$STATE_DIR/no-standin" ] && [ -f "$builder" ] || return 1
  known="$(cat "$STATE_DIR/no-standin")"
  [ "$(head -n 1 <<<"$known")" = "$(sha256sum <"$builder")" ] || return 1
  for image in "$@"; do grep -qxF "$image" <<<"$known" || return 1; done
}

UP_SERVICES=()
LEFT_OUT=()
ensure_images() {
  local lines missing=() missing_images=() service image kind
  lines="$(service_images)" || die "${COMPOSE[*]} config failed"
  while read -r service image kind; do
    if [ "$kind" = pulled ] && ! docker image inspect "$image" >/dev/null 2>&1; then
      missing+=("$service")
      missing_images+=("$image")
    fi
  done <<<"$lines"
  if [ ${#missing[@]} -gt 0 ]; then
    local from="$IMAGES_FROM"
    if [ "$from" = auto ]; then
      if registry_reachable; then from=registry; else from=standins; fi
    fi
    say "images missing for: ${missing[*]}; getting them from: $from"
    case "$from" in
      registry) "${COMPOSE[@]}" pull "${missing[@]}" || die "${COMPOSE[*]} pull failed" ;;
      standins)
        if known_without_standin "${missing_images[@]}"; then
          say "no stand-in exists for ${missing_images[*]} (as $OFFLINE_IMAGES/build.sh reported before)"
        else
          build_standins
        fi ;;
      *) die "COMPOSE_TEST_IMAGES must be auto, registry or standins (not '$from')" ;;
    esac
  fi
  while read -r service image kind; do
    if [ "$kind" = pulled ] && ! docker image inspect "$image" >/dev/null 2>&1; then
      say "LEFT OUT: $service — no image $image here (no registry, no stand-in); not started, not faked"
      LEFT_OUT+=("$service ($image)")
      continue
    fi
    UP_SERVICES+=("$service")
  done <<<"$lines"
  say "services to bring up: ${UP_SERVICES[*]}"
}

build_images() {
  local t0=$SECONDS
  say "building writer and reader (docker/service.Dockerfile, classic builder)"
  "${COMPOSE[@]}" build writer reader >"$LOG_DIR/build.log" 2>&1 ||
    { tail -n 40 "$LOG_DIR/build.log"; die "the image build failed (log: $LOG_DIR/build.log)"; }
  say "images built in $((SECONDS - t0)) s"
}

# --- the ports lock ----------------------------------------------------------------------------

# True when a process above this one holds an flock on $LOCK (e.g. `flock $LOCK npm test`).
lock_held_above() {
  local inode holders pid
  inode="$(stat -c %i "$LOCK" 2>/dev/null)" || return 1
  holders="$(awk -v inode="$inode" '$2 == "FLOCK" { split($6, f, ":"); if (f[3] == inode) print $5 }' /proc/locks 2>/dev/null)"
  [ -n "$holders" ] || return 1
  pid=$$
  while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
    grep -qxF "$pid" <<<"$holders" && return 0
    pid="$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')"
  done
  return 1
}

take_ports_lock() {
  if lock_held_above; then
    say "ports lock $LOCK: held by a caller of this script"
    return 0
  fi
  exec {lock_fd}>>"$LOCK" || die "cannot open $LOCK"
  if ! flock -n "$lock_fd"; then
    say "waiting for the ports lock $LOCK (another stack or test holds it)"
    flock "$lock_fd" || die "could not lock $LOCK"
  fi
  say "ports lock $LOCK taken"
}

# --- the checks --------------------------------------------------------------------------------

passed=()
failed=()
not_run=()
named_check() { # name command...
  local name="$1" t0=$SECONDS status
  shift
  printf '\n=== check: %s ===\n' "$name"
  "$@"
  status=$?
  if [ "$status" = 0 ]; then
    passed+=("$name ($((SECONDS - t0)) s)")
    printf -- '--- ok: %s (%s s)\n' "$name" "$((SECONDS - t0))"
  else
    failed+=("$name ($((SECONDS - t0)) s)")
    printf -- '--- FAILED: %s (%s s)\n' "$name" "$((SECONDS - t0))"
  fi
  return "$status"
}

node_test() { node --test --test-concurrency=1 --test-reporter=spec "$@"; }

# `up` (Compose itself waits for the health conditions of depends_on), then every container
# healthy within HEALTH_TIMEOUT s of the moment `up` started.
up_and_wait_healthy() {
  export COMPOSE_SERVICES="${UP_SERVICES[*]}" COMPOSE_UP_AT COMPOSE_HEALTH_TIMEOUT="$HEALTH_TIMEOUT"
  COMPOSE_UP_AT=$(date +%s%3N)
  "${COMPOSE[@]}" up -d "${UP_SERVICES[@]}" && node_test tests/compose/health.test.mjs
}

# Docker gives a new container the lowest free address of its network, so a recreated
# container normally gets its old address back, and the redeploy check would prove nothing
# about nginx following new addresses. So a placeholder container takes the app network's first
# address before the stack starts; the redeploy check removes it just before recreating writer
# and reader, and they come back on other addresses, as they do on any host where containers
# came and went in between.
hold_first_address() {
  "${COMPOSE[@]}" up --no-start postgres >/dev/null 2>&1 || return 1 # creates the networks
  docker run -d --name "$ADDRESS_HOLDER" --network "${PROJECT}_app" --entrypoint /bin/busybox \
    "$BUSYBOX_IMAGE" sleep 3600 >/dev/null
}

teardown() {
  local status=$?
  if [ "${STACK_TOUCHED:-no}" = yes ]; then
    if [ ${#failed[@]} -gt 0 ] || [ "$status" != 0 ]; then
      printf '\n=== diagnostics: containers and their last log lines ===\n'
      "${COMPOSE[@]}" ps -a 2>&1
      "${COMPOSE[@]}" logs --no-color --tail=30 2>&1 | tail -n 200
    fi
    docker rm -f "$ADDRESS_HOLDER" >/dev/null 2>&1
    say "tearing down: ${COMPOSE[*]} down -v --remove-orphans"
    "${COMPOSE[@]}" down -v --remove-orphans --timeout 20 >/dev/null 2>&1 ||
      say "WARNING: teardown failed; run: COMPOSE_PROJECT_NAME=$PROJECT ${COMPOSE[*]} down -v"
  fi
  rm -rf "${LOG_DIR:-/nonexistent-dir}"
  exit "$status"
}

run_checks() {
  local rest=("API tests" "Prometheus targets" "dashboard queries" "isolation" "redeploy" "scale-out" "crash" "life cycle")
  STACK_TOUCHED=yes
  docker rm -f "$ADDRESS_HOLDER" >/dev/null 2>&1 # what an interrupted run left
  "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1
  hold_first_address || { failed+=("placeholder on the app network"); return; }
  if ! named_check "up: every container healthy within $HEALTH_TIMEOUT s" up_and_wait_healthy; then
    not_run=("${rest[@]}")
    return
  fi
  named_check "API tests (api-tests/) through nginx at $API_URL" node_test api-tests/
  named_check "Prometheus: writer, reader and node-exporter targets up" node_test tests/compose/monitoring.test.mjs
  named_check "dashboard queries return data (tests/monitoring/panels.test.mjs)" node_test tests/monitoring/panels.test.mjs
  named_check "network isolation (app / monitoring)" node_test tests/compose/isolation.test.mjs
  named_check "redeploy: writer and reader recreated, nginx untouched" node_test tests/compose/redeploy.test.mjs
  named_check "scale-out: 2 writers, 3 readers" node_test tests/compose/scale.test.mjs
  named_check "crash: kill -9 from the host, restarted and healthy" node_test tests/compose/crash.test.mjs
  named_check "life cycle: data survives down + up; down -v leaves nothing" node_test tests/compose/lifecycle.test.mjs
}

LOG_DIR="$(mktemp -d)"
trap teardown EXIT
trap 'exit 130' INT TERM

ensure_tools
ensure_dockerd
ensure_images
build_images
take_ports_lock
say "checks start at $(elapsed)"
run_checks

printf '\n=== summary (project %s, %s, wall time %s) ===\n' "$PROJECT" "${COMPOSE[*]}" "$(elapsed)"
for name in "${passed[@]}"; do printf 'ok       %s\n' "$name"; done
for name in "${failed[@]}"; do printf 'FAILED   %s\n' "$name"; done
for name in "${not_run[@]}"; do printf 'NOT RUN  %s (the stack did not come up healthy)\n' "$name"; done
for name in "${LEFT_OUT[@]}"; do printf 'LEFT OUT %s: no image (no registry, no stand-in); not started, not faked\n' "$name"; done
[ ${#failed[@]} -eq 0 ] && [ ${#not_run[@]} -eq 0 ]
