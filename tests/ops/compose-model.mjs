// The compose file as the layout tests see it: docker-compose.yml parsed, its variables
// interpolated as Compose would, and small accessors per service (networks, environment,
// mounts, ports, health checks). Used by compose.test.mjs; no Docker engine needed.

import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const rel = (p) => path.relative(ROOT, p) || ".";
export const read = (p) => readFileSync(path.resolve(ROOT, p), "utf8");
export const readYaml = (p) => parseYaml(read(p));

export const compose = readYaml("docker-compose.yml");
export const services = compose.services ?? {};

// --- interpolation (${VAR:-default} and friends), as docker compose does it ------------------

export const VARIABLE = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g;

/** The value with every variable replaced by its default (unset environment, as in CI). */
export function interpolate(value) {
  if (typeof value !== "string") return value;
  return value.replace(VARIABLE, (match, name, op, arg) => {
    if (match === "$$") return "$";
    if (op === ":-" || op === "-") return arg;
    return "";
  });
}

/** Every [name, default-or-undefined] referenced anywhere in a parsed document. */
export function variables(node, found = []) {
  if (typeof node === "string") {
    for (const m of node.matchAll(VARIABLE)) {
      if (m[0] === "$$") continue;
      const name = m[1] ?? m[4];
      found.push([name, m[2] === ":-" || m[2] === "-" ? m[3] : undefined]);
    }
  } else if (Array.isArray(node)) {
    node.forEach((item) => variables(item, found));
  } else if (node && typeof node === "object") {
    Object.entries(node).forEach(([key, value]) => {
      variables(key, found);
      variables(value, found);
    });
  }
  return found;
}

// --- normalised views of the compose file -----------------------------------------------------

export function networksOf(name) {
  const networks = services[name]?.networks;
  if (!networks) return [];
  return Array.isArray(networks) ? networks : Object.keys(networks);
}

export function sharesNetwork(a, b) {
  return networksOf(a).some((network) => networksOf(b).includes(network));
}

export function environmentOf(name) {
  const env = services[name]?.environment ?? {};
  if (!Array.isArray(env)) return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v ?? "")]));
  return Object.fromEntries(
    env.map((entry) => {
      const at = entry.indexOf("=");
      return at < 0 ? [entry, ""] : [entry.slice(0, at), entry.slice(at + 1)];
    }),
  );
}

/** [{ source, target, readOnly, kind: "bind" | "volume" }] */
export function mountsOf(name) {
  return (services[name]?.volumes ?? []).map((entry) => {
    if (typeof entry === "object") {
      return {
        source: interpolate(entry.source ?? ""),
        target: entry.target,
        readOnly: entry.read_only === true,
        kind: entry.type === "bind" ? "bind" : "volume",
      };
    }
    const parts = interpolate(entry).split(":");
    const [source, target, mode = ""] = parts.length === 1 ? ["", parts[0]] : parts;
    const kind = /^[./~]/.test(source) ? "bind" : "volume";
    return { source, target, readOnly: mode.split(",").includes("ro"), kind };
  });
}

/** The host path that a path inside a service's container comes from (a bind mount), or null. */
export function hostPathOf(name, containerPath) {
  const candidates = mountsOf(name)
    .filter((m) => m.kind === "bind" && m.source.startsWith("."))
    .filter((m) => containerPath === m.target || containerPath.startsWith(m.target.replace(/\/$/, "") + "/"))
    .sort((a, b) => b.target.length - a.target.length);
  if (candidates.length === 0) return null;
  const mount = candidates[0];
  return path.resolve(ROOT, mount.source, path.posix.relative(mount.target, containerPath));
}

/** [{ hostIp, published, target }] */
export function portsOf(name) {
  return (services[name]?.ports ?? []).map((entry) => {
    if (typeof entry === "object") {
      return {
        hostIp: entry.host_ip ?? "",
        published: String(interpolate(String(entry.published ?? ""))),
        target: String(entry.target),
      };
    }
    let spec = String(interpolate(String(entry))).replace(/\/(tcp|udp)$/, "");
    let hostIp = "";
    const ipv6 = spec.match(/^\[([^\]]+)\]:(.*)$/);
    if (ipv6) [, hostIp, spec] = ipv6;
    const parts = spec.split(":");
    if (parts.length === 3) [hostIp] = parts.splice(0, 1);
    if (parts.length === 1) return { hostIp, published: "(random)", target: parts[0] };
    return { hostIp, published: parts[0], target: parts[1] };
  });
}

export function dependsOn(name) {
  const deps = services[name]?.depends_on ?? {};
  if (Array.isArray(deps)) return Object.fromEntries(deps.map((d) => [d, "service_started"]));
  return Object.fromEntries(Object.entries(deps).map(([d, spec]) => [d, spec?.condition ?? "service_started"]));
}

export function healthTest(name) {
  const check = services[name]?.healthcheck;
  if (!check || check.disable === true) return null;
  const cmd = Array.isArray(check.test) ? check.test : ["CMD-SHELL", check.test];
  if (!cmd[0] || cmd[0] === "NONE") return null;
  return cmd.slice(1).join(" ");
}

export function portOfAddr(addr) {
  return String(addr).split(":").pop();
}

export function commandFlag(name, flag) {
  const command = services[name]?.command ?? [];
  const args = Array.isArray(command) ? command : String(command).split(/\s+/);
  const arg = args.map(interpolate).find((a) => a.startsWith(`--${flag}=`));
  return arg?.slice(flag.length + 3);
}

export function isDir(p) {
  return existsSync(p) && statSync(p).isDirectory();
}

export function yamlFilesIn(dir) {
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => path.join(dir, f));
}

/** Files matching a simple glob (`*` within the last path segment) in a host directory. */
export function globFiles(hostPattern) {
  const dir = path.dirname(hostPattern);
  const re = new RegExp(
    "^" + path.basename(hostPattern).replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$",
  );
  return isDir(dir) ? readdirSync(dir).filter((f) => re.test(f)) : [];
}
