# shellcheck shell=bash
# shellcheck disable=SC2034 # URL, WRITER_METRICS, READER_METRICS, STATE: run.sh's settings, read there
# BENCH_TOPOLOGY=ha npm run bench: the replicated topology (docs/ha.md) against the single stack
# in the same run (sourced by bench/run.sh, which defines run_wrk, seed_stack and the rest).
#
# The same write and account-read phases run twice, one topology after the other, never both
# under load at once: first the single stack (the running one, or one started and stopped
# again here), then a private replicated topology (scripts/ha/topology.sh with its own state
# folder and ports: base BENCH_HA_PORT_BASE, else DEFAULT_HA_BENCH_PORT_BASE 26000; nginx on
# base + 80), which is stopped at the end. Printed: both figures, the ratio HA / single (issue
# 13's target: >= 0.8 on 2 cores), and the last line `ha_write_ratio=… ha_read_ratio=…`;
# bench/results/ha.json keeps them.

HA_BENCH_STATE="$ROOT/.stack/ha-bench"
HA_BENCH_BASE="${BENCH_HA_PORT_BASE:-$DEFAULT_HA_BENCH_PORT_BASE}"
HA_BENCH_STARTED=0

ha_topology() { # start|stop|clean (clean: the stores' state deleted, for a fresh start)
  local script="$ROOT/scripts/ha/topology.sh"
  [ "$1" = clean ] && script="$ROOT/scripts/ha/stores.sh"
  env -u PGPASSWORD HA_STATE_DIR="$HA_BENCH_STATE" HA_PORT_BASE="$HA_BENCH_BASE" \
    HA_PROXY_PORT=$((HA_BENCH_BASE + 80)) HA_BUILD=no HA_MONITORING=no LOG_FORMAT=json RUST_LOG=warn \
    bash "$script" "$1"
}

ha_cleanup() {
  if [ "$HA_BENCH_STARTED" = 1 ]; then
    say "stopping the replicated topology this benchmark started"
    ha_topology stop >"$TMP/logs/ha-stop.txt" 2>&1 || true
    HA_BENCH_STARTED=0
  fi
}

ha_metrics_urls() { # first-port count: the instances' /metrics URLs, space-separated
  local k urls=()
  for ((k = 0; k < $2; k++)); do urls+=("http://127.0.0.1:$(($1 + k))/metrics"); done
  echo "${urls[*]}"
}

# ha_pair label: the two phases compared, on whatever URL / metrics / state is current.
ha_pair() {
  seed_stack
  run_wrk "$1_write" "$1  write  POST /transactions" "$WRITE_CONNS" write.lua
  run_wrk "$1_account_read" "$1  read   GET /accounts/{id}" "$READ_CONNS" account_read.lua
}

ha_main() {
  rm -rf "$TMP"
  mkdir -p "$TMP/phases" "$TMP/logs"
  ensure_tools
  PYTHON=python3 # no chart in this mode
  "$PYTHON" "$BENCH_DIR/lib/bench.py" accounts "$ACCOUNTS_N" "$TMP/accounts.txt"
  say "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

  ensure_stack
  ha_pair single
  if [ "$STARTED_STACK" = 1 ]; then
    say "stopping the single stack before the replicated one runs"
    bash "$ROOT/scripts/stack.sh" stop >"$TMP/logs/single-stop.txt" 2>&1 || true
    STARTED_STACK=0
  fi

  say "starting a private replicated topology (2 writers, 2 readers, Patroni, Sentinel; $HA_BENCH_STATE)"
  HA_BENCH_STARTED=1
  # A fresh copy every run: the same empty database as the single stack's seeding meets, and no
  # configuration left from an earlier run on other ports.
  { ha_topology stop && ha_topology clean; } >"$TMP/logs/ha-clean.txt" 2>&1 || true
  rm -rf "$HA_BENCH_STATE"
  ha_topology start >"$TMP/logs/ha-start.txt" 2>&1 || { tail -n 20 "$TMP/logs/ha-start.txt" >&2; die "the replicated topology did not start"; }
  URL="http://127.0.0.1:$((HA_BENCH_BASE + 80))"
  WRITER_METRICS="$(ha_metrics_urls $((HA_BENCH_BASE + 181)) "${HA_WRITERS:-2}")"
  READER_METRICS="$(ha_metrics_urls $((HA_BENCH_BASE + 191)) "${HA_READERS:-2}")"
  STATE="$HA_BENCH_STATE/services" # the CPU meter's writer/reader pids
  ha_pair ha
  ha_cleanup

  "$PYTHON" - "$TMP/phases" "$RESULTS/ha.json" "$(nproc)" <<'EOF'
import glob, json, os, sys, time
phases, out, cores = sys.argv[1], sys.argv[2], int(sys.argv[3])
rps, errors = {}, 0
for f in glob.glob(os.path.join(phases, "*.json")):
    if f.endswith((".meta.json", ".cpu.json")):
        continue
    d = json.load(open(f))
    name = os.path.basename(f)[3:-5]
    rps[name] = d.get("rps") or 0
    errors += sum(d.get("errors", {}).values())
ratio = lambda kind: rps.get(f"ha_{kind}", 0) / rps[f"single_{kind}"] if rps.get(f"single_{kind}") else 0
result = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": cores, "rps": rps,
          "ha_write_ratio": round(ratio("write"), 2), "ha_read_ratio": round(ratio("account_read"), 2),
          "errors": errors, "target": 0.8}
json.dump(result, open(out, "w"), indent=2)
for kind in ("write", "account_read"):
    print(f"[bench] {kind:13s} single {rps.get('single_' + kind, 0):9.0f} req/s   ha {rps.get('ha_' + kind, 0):9.0f} req/s   "
          f"ratio {ratio(kind):.2f} ({'PASS' if ratio(kind) >= 0.8 else 'MISS'} >= 0.8)")
print(f"ha_write_ratio={result['ha_write_ratio']} ha_read_ratio={result['ha_read_ratio']} errors={errors}")
sys.exit(1 if errors else 0)
EOF
}
