// Renders the kustomize overlays with the pinned kubectl (scripts/test-kubernetes.sh installs
// it) and gives the tests the objects, plus small lookups over them. No cluster is involved:
// `kubectl kustomize` only reads files.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, parse as parseYaml } from "yaml";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const read = (p) => readFileSync(path.resolve(ROOT, p), "utf8");
const KUBECTL =
  process.env.KUBECTL ?? path.join(os.homedir(), ".cache/transaction-api/venv-k8s/bin/kubectl");

/** Every overlay, alone and with every optional component: what a user can apply. */
export const OVERLAYS = ["dev", "production"];
export const COMPONENTS = ["service-monitor", "ingress-tls"];
export const VARIANTS = OVERLAYS.flatMap((o) => [
  { name: o, overlay: o, components: [] },
  ...COMPONENTS.map((c) => ({ name: `${o}+${c}`, overlay: o, components: [c] })),
]);

/** The objects `kubectl kustomize` renders for an overlay (with components, through a
 * throw-away kustomization under .stack/: kustomize accepts only relative paths). */
export function render({ overlay, components }) {
  let dir = path.join(ROOT, "deploy/kubernetes/overlays", overlay);
  let scratch;
  if (components.length > 0) {
    scratch = path.join(ROOT, ".stack/kubernetes", `${overlay}+${components.join("+")}`);
    mkdirSync(scratch, { recursive: true });
    const up = path.relative(scratch, path.join(ROOT, "deploy/kubernetes"));
    writeFileSync(
      path.join(scratch, "kustomization.yaml"),
      [
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "resources:",
        `  - ${up}/overlays/${overlay}`,
        "components:",
        ...components.map((c) => `  - ${up}/components/${c}`),
        "",
      ].join("\n"),
    );
    dir = scratch;
  }
  try {
    const out = execFileSync(KUBECTL, ["kustomize", dir], {
      encoding: "utf8",
      // No kubeconfig: kubectl must not look for a cluster (it would try localhost:8080).
      env: { ...process.env, KUBECONFIG: "/dev/null" },
    });
    return parseAllDocuments(out).map((doc) => doc.toJS()).filter(Boolean);
  } finally {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
}

// --- lookups --------------------------------------------------------------------------------

export const WORKLOAD_KINDS = new Set(["Deployment", "StatefulSet", "DaemonSet"]);
export const workloads = (objs) => objs.filter((o) => WORKLOAD_KINDS.has(o.kind));
export const ofKind = (objs, kind) => objs.filter((o) => o.kind === kind);
export const named = (objs, kind, name) =>
  objs.find((o) => o.kind === kind && o.metadata.name === name);

/** A generated ConfigMap or Secret by the name it has before kustomize adds its hash. */
export function generated(objs, kind, base) {
  const hits = objs.filter(
    (o) => o.kind === kind && (o.metadata.name === base || o.metadata.name.startsWith(`${base}-`)),
  );
  return hits.length === 1 ? hits[0] : undefined;
}

/** Does a `matchLabels` selector select these labels? (matchExpressions are not used here,
 * and a test that met one would otherwise be wrong silently.) */
export function selects(selector, labels = {}) {
  if (!selector) return false;
  if (selector.matchExpressions?.length) throw new Error("matchExpressions are not supported by this test");
  return Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
}

/** Secret or ConfigMap data as text (Secret data is base64). */
export function dataOf(obj, key) {
  if (obj.stringData?.[key] !== undefined) return obj.stringData[key];
  if (obj.kind === "Secret" && obj.data?.[key] !== undefined) {
    return Buffer.from(obj.data[key], "base64").toString("utf8");
  }
  return obj.data?.[key];
}

/** A container's environment as the kubelet builds it: envFrom first, then env in order,
 * each `$(NAME)` expanded from what came before. Values from Secrets not in the rendered
 * objects (created by an operator or by hand) stay symbolic: `<secret name.key>`. */
export function environment(objs, container) {
  const env = {};
  for (const from of container.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    const kind = from.configMapRef ? "ConfigMap" : "Secret";
    const src = named(objs, kind, ref.name);
    if (!src) throw new Error(`envFrom ${kind} ${ref.name} is not rendered`);
    for (const key of Object.keys({ ...src.data, ...src.stringData })) env[key] = dataOf(src, key);
  }
  for (const item of container.env ?? []) {
    if (item.value !== undefined) {
      env[item.name] = item.value.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n) => env[n] ?? m);
      continue;
    }
    const ref = item.valueFrom?.secretKeyRef ?? item.valueFrom?.configMapKeyRef;
    const kind = item.valueFrom?.secretKeyRef ? "Secret" : "ConfigMap";
    const src = ref && named(objs, kind, ref.name);
    env[item.name] = src ? dataOf(src, ref.key) : `<${ref?.name}.${ref?.key}>`;
  }
  return env;
}

/** The service images docker compose runs (image: keys; writer and reader are built). */
export function composeImages() {
  const compose = parseYaml(read("docker-compose.yml"));
  return Object.fromEntries(
    Object.entries(compose.services).filter(([, s]) => s.image).map(([n, s]) => [n, s.image]),
  );
}

/** The default of a millisecond setting, read from shared/src/settings/variables.rs itself. */
export function settingDefaultMs(name) {
  const src = read("shared/src/settings/variables.rs");
  const m = src.match(new RegExp(`both\\(\\s*"${name}",\\s*"([0-9_]+)"\\)`));
  if (!m) throw new Error(`no default for ${name} in shared/src/settings/variables.rs`);
  return Number(m[1].replaceAll("_", ""));
}
