// Every default port and address is written once, in scripts/lib/defaults.sh; the files that
// cannot read it restate it, and this test fails when one of them says otherwise: compose and
// .env.example, the Prometheus configurations, the Dockerfile and the Kubernetes manifests, the
// replicated topology's settings, and the tests' own configuration. Also: defaults.sh stays
// plain NAME=value lines (the Rust tests parse it too), and no script or test writes a default
// host address (127.0.0.1:8080 and the like) again. Runs in scripts/check-containers.sh.

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { parseAllDocuments } from "yaml";
import { DEFAULTS } from "../lib/defaults.mjs";
import { PORTS as FAULTS_PORTS } from "../faults/lib/config.mjs";
import { ROOT, read, readYaml, services, variables, environmentOf, portsOf } from "./compose-model.mjs";

const portOf = (address) => address.split(":").pop();

describe("scripts/lib/defaults.sh", () => {
  test("is plain NAME=value lines (comments and blank lines aside), nothing a parser must evaluate", () => {
    const odd = read("scripts/lib/defaults.sh")
      .split("\n")
      .filter((line) => line.trim() !== "" && !line.startsWith("#"))
      .filter((line) => !/^DEFAULT_[A-Z0-9_]+=[^\s$`"'\\;]+$/.test(line));
    assert.deepEqual(odd, []);
  });

  test("names the services' defaults the Rust tests compare with settings::VARIABLES", () => {
    for (const name of ["WRITER_PORT", "READER_PORT", "WRITER_METRICS_PORT", "READER_METRICS_PORT", "DATABASE_URL", "REDIS_URL"]) {
      assert.ok(DEFAULTS[name], `DEFAULT_${name} is missing`);
    }
  });

  test("no two stacks share a port (every *_PORT default is distinct)", () => {
    const seen = new Map();
    for (const [name, value] of Object.entries(DEFAULTS).filter(([name]) => /_PORT$/.test(name))) {
      assert.ok(!seen.has(value), `DEFAULT_${name} and DEFAULT_${seen.get(value)} are both ${value}`);
      seen.set(value, name);
    }
  });
});

describe("docker compose restates them", () => {
  test("every compose variable that has a default in defaults.sh has the same default there", () => {
    const restated = variables(readYaml("docker-compose.yml")).filter(([name, fallback]) => fallback !== undefined && name in DEFAULTS);
    assert.deepEqual(restated.map(([name]) => name).sort(), [
      "GRAFANA_PORT", "PROMETHEUS_PORT", "PROXY_PORT", "RATE_LIMIT_CONN", "RATE_LIMIT_LIST_PER_MINUTE", "RATE_LIMIT_RPS", "REDIS_MAXMEMORY", "TLS_PORT",
    ]);
    for (const [name, fallback] of restated) assert.equal(fallback, DEFAULTS[name], `\${${name}:-${fallback}}`);
  });

  test("and .env.example shows the same values", () => {
    const shown = Object.fromEntries(
      read(".env.example").split("\n").map((line) => /^([A-Z0-9_]+)=(.*)$/.exec(line)).filter(Boolean).map((m) => [m[1], m[2]]),
    );
    for (const name of ["PROXY_PORT", "PROMETHEUS_PORT", "GRAFANA_PORT", "REDIS_MAXMEMORY", "TLS_PORT", "RATE_LIMIT_RPS", "RATE_LIMIT_LIST_PER_MINUTE", "RATE_LIMIT_CONN"]) {
      assert.equal(shown[name], DEFAULTS[name], name);
    }
  });

  test("inside the containers: nginx, Prometheus and Grafana listen on the default ports", () => {
    assert.deepEqual(portsOf("nginx").map((p) => p.target), [DEFAULTS.PROXY_PORT, DEFAULTS.TLS_PORT]);
    assert.match(read("nginx/edge/entrypoint.sh"), new RegExp(`EDGE_TLS_LISTEN=${DEFAULTS.TLS_PORT} `), "nginx's HTTPS listener in the container");
    assert.deepEqual(portsOf("prometheus").map((p) => p.target), [DEFAULTS.PROMETHEUS_PORT]);
    assert.deepEqual(portsOf("grafana").map((p) => p.target), [DEFAULTS.GRAFANA_PORT]);
  });

  test("writer and reader listen on the default API and metrics ports", () => {
    for (const kind of ["writer", "reader"]) {
      const env = environmentOf(kind);
      assert.equal(portOf(env.LISTEN_ADDR), DEFAULTS[`${kind.toUpperCase()}_PORT`], `${kind} LISTEN_ADDR`);
      assert.equal(portOf(env.METRICS_ADDR), DEFAULTS[`${kind.toUpperCase()}_METRICS_PORT`], `${kind} METRICS_ADDR`);
    }
    assert.ok(services.writer && services.reader);
  });
});

describe("the images, the manifests and Prometheus restate them", () => {
  test("docker/service.Dockerfile: each target's LISTEN_ADDR and METRICS_ADDR", () => {
    const text = read("docker/service.Dockerfile");
    for (const kind of ["writer", "reader"]) {
      const stage = text.slice(text.search(new RegExp(`^FROM .* AS ${kind}$`, "m")));
      const [, listen, metrics] = /LISTEN_ADDR=(\S+)\s*\\\s*\n\s*METRICS_ADDR=(\S+)/.exec(stage) ?? [];
      assert.equal(portOf(listen ?? ""), DEFAULTS[`${kind.toUpperCase()}_PORT`], `${kind} LISTEN_ADDR`);
      assert.equal(portOf(metrics ?? ""), DEFAULTS[`${kind.toUpperCase()}_METRICS_PORT`], `${kind} METRICS_ADDR`);
    }
  });

  test("deploy/kubernetes/base: the writer's and reader's LISTEN_ADDR and METRICS_ADDR", () => {
    for (const kind of ["writer", "reader"]) {
      const docs = parseAllDocuments(read(`deploy/kubernetes/base/${kind}.yaml`)).map((d) => d.toJS());
      const containers = docs.flatMap((d) => d?.spec?.template?.spec?.containers ?? []);
      const env = Object.fromEntries(containers.flatMap((c) => c.env ?? []).map((e) => [e.name, e.value]));
      assert.equal(portOf(env.LISTEN_ADDR ?? ""), DEFAULTS[`${kind.toUpperCase()}_PORT`], `${kind} LISTEN_ADDR`);
      assert.equal(portOf(env.METRICS_ADDR ?? ""), DEFAULTS[`${kind.toUpperCase()}_METRICS_PORT`], `${kind} METRICS_ADDR`);
    }
  });

  test("Prometheus: the native and the compose targets are the default metrics ports", () => {
    const target = (job) =>
      job.static_configs ? job.static_configs[0].targets[0] : `${job.dns_sd_configs[0].names[0]}:${job.dns_sd_configs[0].port}`;
    const targets = (file) => Object.fromEntries(readYaml(file).scrape_configs.map((job) => [job.job_name, target(job)]));
    assert.deepEqual(targets("monitoring/prometheus/prometheus.native.yml"), {
      writer: `127.0.0.1:${DEFAULTS.WRITER_METRICS_PORT}`,
      reader: `127.0.0.1:${DEFAULTS.READER_METRICS_PORT}`,
      node: `127.0.0.1:${DEFAULTS.NODE_EXPORTER_PORT}`,
    });
    assert.deepEqual(targets("monitoring/prometheus/prometheus.yml"), {
      writer: `writer:${DEFAULTS.WRITER_METRICS_PORT}`,
      reader: `reader:${DEFAULTS.READER_METRICS_PORT}`,
      node: `node-exporter:${DEFAULTS.NODE_EXPORTER_PORT}`,
    });
  });
});

describe("the scripts and tests read them", () => {
  test("nginx/edge/generate.sh falls back on the defaults of the edge settings (the containers cannot read defaults.sh)", () => {
    const text = read("nginx/edge/generate.sh");
    for (const name of ["RATE_LIMIT_RPS", "RATE_LIMIT_LIST_PER_MINUTE", "RATE_LIMIT_CONN"]) {
      const fallback = new RegExp(`\\$\\{${name}:-([^}]*)\\}`).exec(text)?.[1];
      assert.equal(fallback, DEFAULTS[name], `\${${name}:-...} in nginx/edge/generate.sh`);
    }
    assert.match(text, /burst="\$\{RATE_LIMIT_BURST:-\}"[\s\S]*\[ -n "\$burst" \] \|\| burst="\$rps"/, "RATE_LIMIT_BURST defaults to RATE_LIMIT_RPS");
  });

  test("the replicated topology's settings resolve to the defaults (scripts/ha/stores.sh env)", () => {
    const out = execFileSync("bash", ["scripts/ha/stores.sh", "env"], { cwd: ROOT, env: { PATH: process.env.PATH }, encoding: "utf8" });
    const env = Object.fromEntries(out.trim().split("\n").map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]));
    assert.equal(env.HA_PORT_BASE, DEFAULTS.HA_PORT_BASE);
    assert.equal(env.HA_PROXY_PORT, DEFAULTS.PROXY_PORT);
  });

  test("every replicated topology's ports lie below the ephemeral range and clear of every other default port", () => {
    // Each base owns base .. base + 999 (scripts/ha/defaults.env's offsets reach 600).
    const bases = Object.entries(DEFAULTS).filter(([name]) => /^HA_.*PORT_BASE$/.test(name)).map(([name, v]) => [name, Number(v)]);
    assert.ok(bases.length >= 4, "the HA bases");
    const others = Object.entries(DEFAULTS).filter(([name]) => /_PORT$/.test(name)).map(([name, v]) => [name, Number(v)]);
    for (const [name, base] of bases) {
      assert.ok(base + 999 < 32768, `DEFAULT_${name} ${base}: its ports reach the ephemeral range (32768-60999)`);
      for (const [other, port] of others) assert.ok(port < base || port > base + 999, `DEFAULT_${other} ${port} lies in DEFAULT_${name}'s ports`);
      for (const [otherBase, b] of bases) assert.ok(otherBase === name || Math.abs(b - base) >= 1000, `DEFAULT_${name} and DEFAULT_${otherBase} overlap`);
    }
  });

  test("the fault tests' ports are the FAULTS_ defaults (no FAULTS_PORT_OFFSET)", { skip: process.env.FAULTS_PORT_OFFSET ? "FAULTS_PORT_OFFSET is set" : false }, () => {
    assert.equal(String(FAULTS_PORTS.proxy), DEFAULTS.FAULTS_PROXY_PORT);
    assert.equal(String(FAULTS_PORTS.pg), DEFAULTS.FAULTS_POSTGRES_PORT);
    assert.equal(String(FAULTS_PORTS.readerMetrics), DEFAULTS.FAULTS_READER_METRICS_PORT);
  });

  test("no script or test writes a default host address again (the loopback or localhost with a default port)", () => {
    const ports = ["PROXY_PORT", "WRITER_PORT", "READER_PORT", "WRITER_METRICS_PORT", "READER_METRICS_PORT", "PROMETHEUS_PORT", "NODE_EXPORTER_PORT", "GRAFANA_PORT"].map((n) => DEFAULTS[n]);
    const address = new RegExp(`(127\\.0\\.0\\.1|localhost):(${ports.join("|")})\\b`);
    const files = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "scripts", "tests", "bench", "api-tests"], { cwd: ROOT, encoding: "utf8" })
      .split("\n")
      .filter((file) => /\.(sh|mjs|js|py|lua)$/.test(file));
    const found = [];
    for (const file of files) {
      read(file).split("\n").forEach((line, index) => {
        const code = line.replace(/^\s*(#|\/\/|\*|--).*$/, "");
        if (address.test(code)) found.push(`${file}:${index + 1}: ${line.trim()}`);
      });
    }
    assert.deepEqual(found, [], "read the port from scripts/lib/defaults.sh (tests/lib/defaults.mjs) instead");
  });
});
