#!/usr/bin/env bash
# The monitoring tests (part of npm test): Prometheus configuration and alert rules, the Grafana
# provisioning and dashboards, the services' metrics, and every dashboard query against the
# running Prometheus. Needs the native stack and monitoring up (npm start, or
# `bash scripts/stack.sh start && bash scripts/monitoring.sh start`; on other ports, the same
# PROXY_PORT, PROMETHEUS_PORT, ... in the environment); starts nothing itself.
#
# Runs every check, prints what each one checks, and exits non-zero if any failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TAG=monitoring-tests
# check, checks_passed, the default ports
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

# The stack's ports: PROMETHEUS_PORT, PROXY_PORT, ... as the stack was started with, else the
# defaults (npm test runs this against its own stack, scripts/test.sh).
PROMETHEUS_URL="${PROMETHEUS_URL:-http://127.0.0.1:${PROMETHEUS_PORT:-$DEFAULT_PROMETHEUS_PORT}}"
API_URL="${API_URL:-http://127.0.0.1:${PROXY_PORT:-$DEFAULT_PROXY_PORT}}"
WRITER_METRICS_URL="${WRITER_METRICS_URL:-http://127.0.0.1:${WRITER_METRICS_PORT:-$DEFAULT_WRITER_METRICS_PORT}/metrics}"
READER_METRICS_URL="${READER_METRICS_URL:-http://127.0.0.1:${READER_METRICS_PORT:-$DEFAULT_READER_METRICS_PORT}/metrics}"
export PROMETHEUS_URL API_URL

PROM_DIR=monitoring/prometheus
CONTAINER_CONFIG="$PROM_DIR/prometheus.yml"
NATIVE_CONFIG="$PROM_DIR/prometheus.native.yml"

step() { printf '\n=== %s ===\n' "$*"; }

ensure_commands promtool=prometheus python3=python3 node=nodejs curl=curl
python3 -c 'import yaml' 2>/dev/null || apt_install python3-yaml

# --- Prometheus: configuration and rules ------------------------------------------------------

step "promtool check config: container ($CONTAINER_CONFIG) and native ($NATIVE_CONFIG)"
check "container config is valid" promtool check config "$CONTAINER_CONFIG"
check "native config is valid" promtool check config "$NATIVE_CONFIG"

step "promtool check rules $PROM_DIR/rules/*.yml"
check "alert rules are valid" promtool check rules "$PROM_DIR"/rules/*.yml

step "promtool test rules tests/monitoring/*.test.yml"
check "alert rule unit tests pass" promtool test rules tests/monitoring/*.test.yml

step "native and container configs differ only in how they find their targets"
# Compared as YAML, not text: compose finds writers and readers by DNS (every container of a
# scaled service), the native config names one address each. Everything else must be equal,
# and each compose target (a DNS name or address, and port) must stand for its native address.
same_but_targets() {
  python3 - "$CONTAINER_CONFIG" "$NATIVE_CONFIG" \
    "writer:$DEFAULT_WRITER_METRICS_PORT=127.0.0.1:$DEFAULT_WRITER_METRICS_PORT" \
    "reader:$DEFAULT_READER_METRICS_PORT=127.0.0.1:$DEFAULT_READER_METRICS_PORT" \
    "node-exporter:$DEFAULT_NODE_EXPORTER_PORT=127.0.0.1:$DEFAULT_NODE_EXPORTER_PORT" <<'PY'
import sys
import yaml

container_file, native_file, *pairs = sys.argv[1:]
native_of = dict(pair.split("=", 1) for pair in pairs)
DISCOVERY = ("static_configs", "dns_sd_configs")


def split(path):
    config = yaml.safe_load(open(path))
    jobs = config.pop("scrape_configs")
    settings = {j["job_name"]: {k: v for k, v in j.items() if k not in DISCOVERY} for j in jobs}
    targets = {}
    for job in jobs:
        found = [t for c in job.get("static_configs", []) for t in c.get("targets", [])]
        found += [f"{name}:{c['port']}" for c in job.get("dns_sd_configs", []) for name in c["names"]]
        targets[job["job_name"]] = found
    return config, settings, targets


container, native = split(container_file), split(native_file)
problems = []
if container[0] != native[0]:
    problems.append(f"global settings differ: {container[0]} vs {native[0]}")
if container[1] != native[1]:
    problems.append(f"job settings differ: {container[1]} vs {native[1]}")
for job, targets in container[2].items():
    mapped = [native_of.get(t, f"(unmapped {t})") for t in targets]
    if mapped != native[2].get(job):
        problems.append(f"job {job}: {targets} stands for {mapped}, the native config has {native[2].get(job)}")
if set(container[2]) != set(native[2]):
    problems.append(f"jobs differ: {sorted(container[2])} vs {sorted(native[2])}")
for problem in problems:
    print(problem)
if problems:
    print("the two configs differ in more than how they find their targets: change both together")
    sys.exit(1)
print(f"identical apart from how {len(container[2])} jobs find their targets")
PY
}
check "prometheus.native.yml = prometheus.yml but for how targets are found" same_but_targets

# --- Grafana: provisioning files and dashboards ------------------------------------------------

step "Grafana provisioning (YAML) and dashboards (JSON) parse; datasource uids"
grafana_files() {
  python3 - <<'PY'
import glob, json, sys, yaml

ok = True
datasources = {}
for path in sorted(glob.glob("monitoring/grafana/provisioning/**/*.y*ml", recursive=True)):
    try:
        doc = yaml.safe_load(open(path))
    except yaml.YAMLError as error:
        print(f"{path}: not valid YAML: {error}"); ok = False; continue
    if not isinstance(doc, dict) or doc.get("apiVersion") != 1:
        print(f"{path}: expected a mapping with apiVersion: 1"); ok = False; continue
    for ds in doc.get("datasources") or []:
        if not ds.get("uid"):
            print(f"{path}: datasource {ds.get('name')} has no pinned uid"); ok = False
        else:
            datasources[ds["uid"]] = ds.get("type")
    for provider in doc.get("providers") or []:
        if provider.get("type") != "file" or not (provider.get("options") or {}).get("path"):
            print(f"{path}: provider {provider.get('name')} is not a file provider with a path"); ok = False
    print(f"{path}: ok")
if not datasources:
    print("no datasources provisioned"); ok = False
print(f"datasource uids: {datasources}")

uids = set()
for path in sorted(glob.glob("monitoring/grafana/dashboards/**/*.json", recursive=True)):
    try:
        dashboard = json.load(open(path))
    except json.JSONDecodeError as error:
        print(f"{path}: not valid JSON: {error}"); ok = False; continue
    uid = dashboard.get("uid")
    if not uid or uid in uids:
        print(f"{path}: missing or duplicate dashboard uid {uid!r}"); ok = False
    uids.add(uid)
    refs = 0
    def check(where, ds):
        global ok, refs
        refs += 1
        if not isinstance(ds, dict) or ds.get("uid") not in datasources or ds.get("type") != datasources[ds.get("uid")]:
            print(f"{path}: {where}: datasource {ds!r} is not a provisioned {{type, uid}}"); ok = False
    def walk(panels):
        for panel in panels or []:
            check(f"panel {panel.get('title')!r}", panel.get("datasource"))
            for target in panel.get("targets") or []:
                check(f"panel {panel.get('title')!r} target {target.get('refId')}", target.get("datasource"))
            walk(panel.get("panels"))
    walk(dashboard.get("panels"))
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if variable.get("type") == "query":
            check(f"variable {variable.get('name')}", variable.get("datasource"))
    print(f"{path}: uid {uid}, {refs} datasource references, all provisioned")

sys.exit(0 if ok else 1)
PY
}
check "provisioning and dashboards parse; every datasource uid is provisioned" grafana_files
# For the node tests: the provisioned datasources ({uid: type}) and Grafana's minimum interval.
GRAFANA_DATASOURCES="$(python3 -c '
import glob, json, yaml
found = {}
for path in glob.glob("monitoring/grafana/provisioning/datasources/*.y*ml"):
    for ds in (yaml.safe_load(open(path)) or {}).get("datasources") or []:
        if ds.get("uid"): found[ds["uid"]] = ds.get("type")
print(json.dumps(found))' 2>/dev/null || echo '{}')"
GRAFANA_TIME_INTERVAL="$(python3 -c '
import yaml
doc = yaml.safe_load(open("monitoring/grafana/provisioning/datasources/prometheus.yml"))
print(doc["datasources"][0].get("jsonData", {}).get("timeInterval", "15s"))' 2>/dev/null || echo 15s)"
export GRAFANA_DATASOURCES GRAFANA_TIME_INTERVAL

# --- the running services and Prometheus ---------------------------------------------------------

step "promtool check metrics on each service's scrape"
check_metrics() { # name url
  local body
  body="$(curl -fsS --max-time 5 "$2")" || { echo "$1: cannot scrape $2 (is the stack up? npm start)"; return 1; }
  printf '%s: %s samples from %s\n' "$1" "$(grep -cEv '^(#|$)' <<<"$body")" "$2"
  # promtool prints lint problems (missing HELP, bad names...) and exits non-zero on any.
  promtool check metrics <<<"$body"
}
check "writer metrics pass promtool check metrics" check_metrics writer "$WRITER_METRICS_URL"
check "reader metrics pass promtool check metrics" check_metrics reader "$READER_METRICS_URL"

step "every dashboard query returns data from Prometheus ($PROMETHEUS_URL), after traffic through nginx ($API_URL)"
prometheus_ready() {
  curl -fsS -o /dev/null --max-time 3 "$PROMETHEUS_URL/-/ready" && return 0
  echo "Prometheus is not ready at $PROMETHEUS_URL (bash scripts/monitoring.sh start)"
  return 1
}
dashboard_queries() {
  prometheus_ready || return 1
  node --test --test-reporter=spec --test-concurrency=1 tests/monitoring/
}
check "dashboard structure and every panel query (node --test tests/monitoring/)" dashboard_queries

echo
if ! checks_passed; then
  echo "monitoring tests FAILED (${#CHECKS_FAILED[@]})"
  exit 1
fi
echo "all monitoring tests passed"
