// The docker compose layout, checked without a Docker engine: parses docker-compose.yml and
// the files it points at, and asserts what the containers issue promises. Runs in
// scripts/check-containers.sh (npm run check:containers) with `node --test tests/ops/`.

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import {
  ROOT,
  rel,
  read,
  readYaml,
  compose,
  services,
  interpolate,
  variables,
  networksOf,
  sharesNetwork,
  environmentOf,
  mountsOf,
  hostPathOf,
  portsOf,
  dependsOn,
  healthTest,
  portOfAddr,
  commandFlag,
  isDir,
  yamlFilesIn,
  globFiles,
} from "./compose-model.mjs";
import { DEFAULTS } from "../lib/defaults.mjs";

// --- the layout the issue asks for --------------------------------------------------------

const EXPECTED_SERVICES = ["db-roles", "grafana", "nginx", "node-exporter", "postgres", "prometheus", "reader", "redis", "writer"];
const ONE_SHOT = ["db-roles"]; // runs once per `up` and exits: no health check
const APP = ["nginx", "writer", "reader", "postgres", "redis", "db-roles"];
const MONITORING = ["prometheus", "grafana", "node-exporter", "writer", "reader"];
const PUBLISHED = { nginx: ["8080", "8443"], grafana: ["3000"], prometheus: ["9090"] };
const API_PORT = { writer: "8081", reader: "8082" };
const METRICS_PORT = { writer: "9181", reader: "9182" };
const REQUIRED = "run scripts/compose-env.sh"; // what compose says when .env lacks a password

describe("services and networks", () => {
  test("no top-level name: (Compose 1.29 refuses it); .env.example sets COMPOSE_PROJECT_NAME instead", () => {
    assert.equal(compose.name, undefined, "docker-compose.yml has a top-level name:");
    assert.match(read(".env.example"), /^COMPOSE_PROJECT_NAME=[a-z0-9][a-z0-9_-]*$/m);
  });

  test("exactly the nine services (db-roles: one-shot)", () => {
    assert.deepEqual(Object.keys(services).sort(), EXPECTED_SERVICES);
  });

  test("two networks, app and monitoring, both declared", () => {
    assert.deepEqual(Object.keys(compose.networks ?? {}).sort(), ["app", "monitoring"]);
    for (const name of EXPECTED_SERVICES) {
      assert.equal(services[name].network_mode, undefined, `${name} must not use network_mode`);
      for (const network of networksOf(name)) {
        assert.ok(network in compose.networks, `${name} joins undeclared network ${network}`);
      }
    }
  });

  test("app network: nginx, writer, reader, postgres, redis, db-roles — and nothing else", () => {
    const members = EXPECTED_SERVICES.filter((s) => networksOf(s).includes("app"));
    assert.deepEqual(members.sort(), [...APP].sort());
  });

  test("monitoring network: prometheus, grafana, node-exporter, writer, reader — and nothing else", () => {
    const members = EXPECTED_SERVICES.filter((s) => networksOf(s).includes("monitoring"));
    assert.deepEqual(members.sort(), [...MONITORING].sort());
  });

  test("postgres and redis are not on the monitoring network; grafana and node-exporter not on app", () => {
    for (const name of ["postgres", "redis"]) assert.ok(!networksOf(name).includes("monitoring"), name);
    for (const name of ["grafana", "node-exporter"]) assert.ok(!networksOf(name).includes("app"), name);
  });

  test("every service has a restart policy", () => {
    for (const name of EXPECTED_SERVICES) {
      assert.match(String(services[name].restart ?? ""), /^(unless-stopped|always|on-failure(:\d+)?)$/, name);
    }
  });
});

describe("ports", () => {
  test("only nginx 8080 (and 8443, HTTPS when given a certificate), grafana 3000 and prometheus 9090 are published", () => {
    const published = Object.fromEntries(
      EXPECTED_SERVICES.map((name) => [name, portsOf(name).map((p) => p.target)]).filter(([, p]) => p.length > 0),
    );
    assert.deepEqual(published, PUBLISHED);
  });

  test("published ports keep their number on the host and are bound to loopback", () => {
    for (const name of Object.keys(PUBLISHED)) {
      for (const port of portsOf(name)) {
        assert.equal(port.published, port.target, `${name}: host port ${port.published} → ${port.target}`);
        assert.equal(port.hostIp, "127.0.0.1", `${name}: port ${port.target} bound to "${port.hostIp}"`);
      }
    }
  });
});

describe("mounts", () => {
  test("every mounted repository file or directory exists", () => {
    const missing = [];
    for (const name of EXPECTED_SERVICES) {
      for (const mount of mountsOf(name).filter((m) => m.kind === "bind" && m.source.startsWith("."))) {
        const host = path.resolve(ROOT, mount.source);
        assert.ok(host === ROOT || host.startsWith(ROOT + path.sep), `${name}: ${mount.source} is outside the repo`);
        if (!existsSync(host)) missing.push(`${name}: ${mount.source} → ${mount.target}`);
      }
    }
    assert.deepEqual(missing, [], `mounted paths missing from the repository:\n  ${missing.join("\n  ")}`);
  });

  test("repository files are mounted read-only", () => {
    for (const name of EXPECTED_SERVICES) {
      for (const mount of mountsOf(name).filter((m) => m.kind === "bind")) {
        assert.ok(mount.readOnly, `${name}: ${mount.source} → ${mount.target} should be :ro`);
      }
    }
  });

  test("host system paths only for node-exporter (/, /proc, /sys, read-only)", () => {
    for (const name of EXPECTED_SERVICES) {
      for (const mount of mountsOf(name).filter((m) => m.kind === "bind" && m.source.startsWith("/"))) {
        assert.equal(name, "node-exporter", `${name} mounts host path ${mount.source}`);
        assert.ok(["/", "/proc", "/sys"].includes(mount.source), `node-exporter mounts ${mount.source}`);
        assert.ok(mount.readOnly, `node-exporter: ${mount.source} must be read-only`);
      }
    }
  });

  test("named volumes are declared, and hold the PostgreSQL, Prometheus and Grafana data", () => {
    const declared = Object.keys(compose.volumes ?? {});
    for (const name of EXPECTED_SERVICES) {
      for (const mount of mountsOf(name).filter((m) => m.kind === "volume" && m.source)) {
        assert.ok(declared.includes(mount.source), `${name}: volume ${mount.source} is not declared`);
      }
    }
    const dataDirs = { postgres: "/var/lib/postgresql/data", prometheus: "/prometheus", grafana: "/var/lib/grafana" };
    for (const [name, dir] of Object.entries(dataDirs)) {
      const mount = mountsOf(name).find((m) => m.target === dir);
      assert.ok(mount && mount.kind === "volume" && mount.source, `${name}: ${dir} must be a named volume`);
    }
  });
});

describe("images", () => {
  const pinned = (image) => {
    if (/@sha256:[0-9a-f]{64}$/.test(image)) return true;
    const tag = image.includes(":") && image.split("/").pop().split(":")[1];
    return Boolean(tag) && tag !== "latest" && /\d/.test(tag);
  };

  test("every pulled image is pinned to a version (no :latest, no bare name)", () => {
    for (const name of EXPECTED_SERVICES.filter((s) => !services[s].build)) {
      const image = interpolate(services[name].image ?? "");
      assert.ok(image, `${name} has neither image nor build`);
      assert.ok(pinned(image), `${name}: image "${image}" is not pinned to a version`);
    }
  });

  test("writer and reader are built from docker/service.Dockerfile, one target each", () => {
    const dockerfile = read("docker/service.Dockerfile");
    const stages = [...dockerfile.matchAll(/^FROM\s+\S+\s+AS\s+(\S+)/gim)].map((m) => m[1].toLowerCase());
    for (const name of ["writer", "reader"]) {
      const build = services[name].build;
      assert.equal(typeof build, "object", `${name}: build must be a mapping`);
      assert.equal(path.resolve(ROOT, build.context), ROOT, `${name}: the build context is the repository root`);
      assert.equal(build.dockerfile, "docker/service.Dockerfile");
      assert.equal(build.target, name);
      assert.ok(stages.includes(name), `docker/service.Dockerfile has no stage "${name}"`);
    }
  });

  test("every FROM in the Dockerfiles is pinned, or an earlier stage", () => {
    const dockerfile = read("docker/service.Dockerfile");
    const stages = [];
    for (const [, image, stage] of dockerfile.matchAll(/^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?/gim)) {
      assert.ok(stages.includes(image) || pinned(image), `FROM ${image} is not pinned`);
      if (stage) stages.push(stage);
    }
  });

  test("one version everywhere: Cargo.toml, the Dockerfile's VERSION, compose and .env.example", () => {
    const version = read("Cargo.toml").match(/^version\s*=\s*"([^"]+)"/m)?.[1];
    assert.ok(version, "no version in Cargo.toml");
    assert.equal(read("docker/service.Dockerfile").match(/^ARG VERSION=(\S+)/m)?.[1], version, "Dockerfile ARG VERSION");
    for (const name of ["writer", "reader"]) {
      assert.equal(interpolate(services[name].build.args.VERSION), version, `${name} build arg VERSION`);
    }
    assert.match(read(".env.example"), new RegExp(`^#?\\s*VERSION=${version.replace(/\./g, "\\.")}$`, "m"));
  });

  test("the Dockerfile builds with the classic builder and no registry beyond its base images", () => {
    const dockerfile = read("docker/service.Dockerfile");
    // A `# syntax=` line makes BuildKit fetch a frontend image from a registry.
    assert.doesNotMatch(dockerfile, /^#\s*syntax\s*=/im, "a # syntax= directive");
    // BuildKit-only instructions that the classic builder (Compose 1.29) cannot run.
    assert.doesNotMatch(dockerfile, /^\s*RUN\s+--(mount|network|security)\b/im, "RUN --mount/--network/--security");
    assert.doesNotMatch(dockerfile, /^\s*(RUN|COPY)\b[^\n]*<<-?\s*["']?\w+/im, "a heredoc");
    assert.doesNotMatch(dockerfile, /^\s*(COPY|ADD)\s+--(link|parents|exclude|chmod)\b/im, "a BuildKit-only COPY flag");
  });

  test(".dockerignore lets in the Cargo workspace only", () => {
    const lines = read(".dockerignore")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    assert.equal(lines[0], "*", ".dockerignore should start by excluding everything");
    const members = JSON.parse(read("Cargo.toml").match(/^members\s*=\s*(\[[^\]]*\])/m)[1]);
    for (const entry of ["Cargo.toml", "Cargo.lock", ...members.map((m) => `${m}/`)]) {
      assert.ok(lines.includes(`!${entry}`), `.dockerignore must re-include ${entry}`);
    }
    assert.ok(lines.includes("**/target/"), ".dockerignore must exclude target/ inside the members");
  });
});

describe("health and start-up order", () => {
  test("health checks on postgres, redis, writer, reader, nginx (and the monitoring services)", () => {
    for (const name of EXPECTED_SERVICES.filter((s) => !ONE_SHOT.includes(s))) assert.ok(healthTest(name), `${name} has no health check`);
  });

  test("writer and reader are probed on /health of their metrics port", () => {
    for (const name of ["writer", "reader"]) {
      assert.ok(
        healthTest(name).includes(`http://127.0.0.1:${METRICS_PORT[name]}/health`),
        `${name}: health check "${healthTest(name)}"`,
      );
    }
  });

  test("depends_on waits for health: nginx on both services, the services on their stores", () => {
    const healthy = (deps) => Object.fromEntries(deps.map((d) => [d, "service_healthy"]));
    assert.deepEqual(dependsOn("nginx"), healthy(["reader", "writer"]));
    assert.deepEqual(dependsOn("writer"), { ...healthy(["postgres", "redis"]), "db-roles": "service_completed_successfully" });
    const reader = dependsOn("reader");
    assert.equal(reader.postgres, "service_healthy");
    assert.equal(reader.redis, "service_healthy");
    assert.equal(dependsOn("grafana").prometheus, "service_healthy");
  });

  test("every service_healthy dependency has a health check", () => {
    for (const name of EXPECTED_SERVICES) {
      for (const [dep, condition] of Object.entries(dependsOn(name))) {
        assert.ok(dep in services, `${name} depends on unknown service ${dep}`);
        if (condition === "service_healthy") assert.ok(healthTest(dep), `${name} waits for ${dep}, which has no health check`);
      }
    }
  });
});

describe("writer and reader configuration", () => {
  for (const name of ["writer", "reader"]) {
    test(`${name}: listens on all interfaces, reaches postgres and redis by their compose names`, () => {
      const env = environmentOf(name);
      assert.equal(env.LISTEN_ADDR, `0.0.0.0:${API_PORT[name]}`);
      assert.equal(env.METRICS_ADDR, `0.0.0.0:${METRICS_PORT[name]}`);
      const role = { writer: "WRITER", reader: "READER" }[name];
      assert.equal(env.DATABASE_URL, `postgres://ledger_${name}:\${LEDGER_${role}_PASSWORD:?${REQUIRED}}@postgres:5432/transactions`);
      assert.equal(env.REDIS_URL, `redis://ledger-${name}-tm-:\${REDIS_${role}_PASSWORD:?${REQUIRED}}@redis:6379/0`);
      assert.ok(sharesNetwork(name, "postgres") && sharesNetwork(name, "redis"), `${name} cannot reach its stores`);
    });
  }

  test("postgres creates the transactions database with the superuser's password from .env", () => {
    const env = environmentOf("postgres");
    assert.equal(env.POSTGRES_DB, "transactions");
    assert.equal(env.POSTGRES_USER ?? "postgres", "postgres");
    assert.equal(env.POSTGRES_PASSWORD, `\${POSTGRES_PASSWORD:?${REQUIRED}}`);
  });
});

describe("nginx", () => {
  test("uses the shared nginx.conf, with nginx/compose as its env/", () => {
    const mounts = mountsOf("nginx");
    const find = (target) => mounts.find((m) => m.target === target);
    assert.equal(path.resolve(ROOT, find("/etc/nginx/nginx.conf")?.source ?? ""), path.join(ROOT, "nginx/nginx.conf"));
    assert.equal(path.resolve(ROOT, find("/etc/nginx/env")?.source ?? ""), path.join(ROOT, "nginx/compose"));
    const conf = read("nginx/nginx.conf");
    assert.match(conf, /include\s+env\/upstreams\.conf;/);
    assert.match(conf, /include\s+env\/listen\.conf;/);
  });

  test("writer and reader are found through Docker's DNS per request, at their LISTEN_ADDR ports", () => {
    const code = (file) => read(file).replace(/#.*$/gm, "");
    const upstreams = code("nginx/compose/upstreams.conf");
    // An upstream group resolves its server names once, when nginx starts: after a redeploy
    // or a scale-out it would keep sending to the old addresses.
    assert.doesNotMatch(upstreams, /^\s*upstream\s/m, "nginx/compose/upstreams.conf defines an upstream group");
    const resolver = /^\s*resolver\s+127\.0\.0\.11\b[^;]*\bvalid=(\d+)s\b/m.exec(upstreams);
    assert.ok(resolver, "no `resolver 127.0.0.11 valid=Ns` (Docker's DNS) in nginx/compose/upstreams.conf");
    assert.ok(Number(resolver[1]) <= 5, `resolver valid=${resolver[1]}s: a redeploy must be seen within seconds`);

    // nginx.conf proxies to $api_backend, whose values are the native upstream group names;
    // the compose include maps each to the service of that name and its port, ...
    const conf = code("nginx/nginx.conf");
    assert.match(conf, /proxy_pass\s+http:\/\/\$api_backend;/);
    const mapBody = (text, from, to) =>
      new RegExp(`map\\s+\\$${from}\\s+\\$${to}\\s*\\{([^}]*)\\}`).exec(text)?.[1] ?? "";
    const entries = (body) => [...body.matchAll(/^\s*(\S+)\s+(\S+);/gm)].map(([, key, value]) => [key, value]);
    const groups = [...new Set(entries(mapBody(conf, "request_method", "api_backend")).map(([, value]) => value))].sort();
    assert.deepEqual(groups, ["reader", "writer"]);
    const targets = Object.fromEntries(entries(mapBody(upstreams, "api_backend", "api_compose_backend")));
    assert.deepEqual(Object.keys(targets).sort(), groups, "the compose map must cover every value of $api_backend");
    for (const [group, target] of Object.entries(targets)) {
      const [host, port] = target.split(":");
      assert.equal(host, group, `${group} -> ${target}: not the service of that name`);
      assert.ok(host in services, `${host} is not a compose service`);
      assert.ok(sharesNetwork("nginx", host), `nginx and ${host} share no network`);
      assert.equal(portOfAddr(environmentOf(host).LISTEN_ADDR), port, `${host}: LISTEN_ADDR vs ${target}`);
    }
    // ... and listen.conf (the server block) makes that the proxy_pass target.
    assert.match(code("nginx/compose/listen.conf"), /^\s*set\s+\$api_backend\s+\$api_compose_backend;/m);
  });

  test("nginx listens in the container on the published port", () => {
    const listen = read("nginx/compose/listen.conf").match(/^\s*listen\s+(?:[\d.]+:)?(\d+)/m)?.[1];
    assert.equal(listen, PUBLISHED.nginx[0]);
  });
});

describe("prometheus", () => {
  const configHost = hostPathOf("prometheus", commandFlag("prometheus", "config.file") ?? "/etc/prometheus/prometheus.yml");

  test("its configuration is monitoring/prometheus/prometheus.yml, mounted", () => {
    assert.ok(configHost, "prometheus: --config.file is not inside a bind mount");
    assert.equal(rel(configHost), "monitoring/prometheus/prometheus.yml");
    assert.ok(existsSync(configHost), "monitoring/prometheus/prometheus.yml is missing (the monitoring files must exist)");
  });

  test("every scrape job of both Prometheus configs has a sample_limit", () => {
    for (const file of ["monitoring/prometheus/prometheus.yml", "monitoring/prometheus/prometheus.native.yml"]) {
      for (const job of parseYaml(read(file)).scrape_configs) {
        assert.ok(Number.isInteger(job.sample_limit) && job.sample_limit > 0, `${file}: job ${job.job_name} has no sample_limit`);
      }
    }
  });

  test("every scrape target is a compose service sharing a network with prometheus", () => {
    assert.ok(configHost && existsSync(configHost), "monitoring/prometheus/prometheus.yml is missing");
    const config = parseYaml(readFileSync(configHost, "utf8"));
    const jobs = config.scrape_configs ?? [];
    assert.ok(jobs.length > 0, "no scrape_configs");
    const seen = new Set();
    for (const job of jobs) {
      assert.ok(job.static_configs || job.dns_sd_configs, `job ${job.job_name}: only static_configs and dns_sd_configs can be checked here`);
      // A DNS name (type A) with its port is a target like a static one: each address the
      // name resolves to, on that port.
      const dnsTargets = (job.dns_sd_configs ?? []).flatMap((c) => {
        assert.equal(c.type, "A", `job ${job.job_name}: DNS discovery of A records (compose's DNS)`);
        return (c.names ?? []).map((name) => `${name}:${c.port}`);
      });
      for (const target of [...(job.static_configs ?? []).flatMap((c) => c.targets ?? []), ...dnsTargets]) {
        const [host, port] = target.split(":");
        assert.ok(host in services, `job ${job.job_name}: target ${target} is not a compose service`);
        assert.ok(sharesNetwork("prometheus", host), `job ${job.job_name}: prometheus and ${host} share no network`);
        if (host in METRICS_PORT) {
          assert.equal(port, portOfAddr(environmentOf(host).METRICS_ADDR), `${target}: not ${host}'s METRICS_ADDR`);
        }
        seen.add(host);
      }
    }
    for (const host of ["writer", "reader", "node-exporter"]) assert.ok(seen.has(host), `${host} is not scraped`);
  });

  test("its rule files are mounted and exist", () => {
    assert.ok(configHost && existsSync(configHost), "monitoring/prometheus/prometheus.yml is missing");
    const config = parseYaml(readFileSync(configHost, "utf8"));
    const configDir = path.posix.dirname(commandFlag("prometheus", "config.file") ?? "/etc/prometheus/prometheus.yml");
    for (const pattern of config.rule_files ?? []) {
      const host = hostPathOf("prometheus", path.posix.resolve(configDir, pattern));
      assert.ok(host, `rule_files ${pattern}: not inside a mount`);
      assert.ok(globFiles(host).length > 0, `rule_files ${pattern}: no file matches in ${rel(path.dirname(host))}`);
    }
  });
});

describe("grafana", () => {
  const env = environmentOf("grafana");
  const provisioning = hostPathOf("grafana", "/etc/grafana/provisioning");

  test("admin password from the environment, anonymous access and sign-up off", () => {
    assert.equal(env.GF_SECURITY_ADMIN_PASSWORD, `\${GRAFANA_ADMIN_PASSWORD:?${REQUIRED}}`);
    assert.equal(env.GF_AUTH_ANONYMOUS_ENABLED, "false");
    assert.equal(env.GF_USERS_ALLOW_SIGN_UP, "false");
  });

  test("provisioning (datasources, dashboards) is mounted from monitoring/grafana/provisioning", () => {
    assert.ok(provisioning, "/etc/grafana/provisioning is not mounted");
    assert.equal(rel(provisioning), "monitoring/grafana/provisioning");
    for (const kind of ["datasources", "dashboards"]) {
      const dir = path.join(provisioning, kind);
      assert.ok(isDir(dir), `${rel(dir)} is missing`);
      assert.ok(yamlFilesIn(dir).length > 0, `${rel(dir)} has no YAML file`);
    }
  });

  test("the provisioned datasources point at services on grafana's network", () => {
    const dir = path.join(provisioning ?? "", "datasources");
    assert.ok(provisioning && isDir(dir), "monitoring/grafana/provisioning/datasources is missing");
    const datasources = yamlFilesIn(dir).flatMap((f) => parseYaml(readFileSync(f, "utf8"))?.datasources ?? []);
    assert.ok(datasources.some((d) => d.type === "prometheus"), "no Prometheus datasource");
    for (const ds of datasources.filter((d) => d.url)) {
      const url = new URL(interpolate(ds.url));
      assert.ok(url.hostname in services, `datasource ${ds.name}: ${url.hostname} is not a compose service`);
      assert.ok(sharesNetwork("grafana", url.hostname), `datasource ${ds.name}: grafana cannot reach ${url.hostname}`);
    }
  });

  test("the dashboard providers read mounted directories that hold dashboards", () => {
    const dir = path.join(provisioning ?? "", "dashboards");
    assert.ok(provisioning && isDir(dir), "monitoring/grafana/provisioning/dashboards is missing");
    const providers = yamlFilesIn(dir).flatMap((f) => parseYaml(readFileSync(f, "utf8"))?.providers ?? []);
    assert.ok(providers.length > 0, "no dashboard provider");
    for (const provider of providers) {
      const inContainer = provider.options?.path;
      assert.ok(inContainer, `provider ${provider.name}: no options.path`);
      const host = hostPathOf("grafana", inContainer);
      assert.ok(host && isDir(host), `provider ${provider.name}: ${inContainer} is not a mounted directory`);
      assert.ok(readdirSync(host).some((f) => f.endsWith(".json")), `${rel(host)} has no dashboard`);
    }
  });

  test("the home dashboard is ledger-overview, mounted where the provider reads it", () => {
    const home = env.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH;
    assert.equal(home, "/var/lib/grafana/dashboards/ledger-overview.json");
    const host = hostPathOf("grafana", home);
    assert.ok(host, `${home} is not inside a mount`);
    assert.equal(rel(host), "monitoring/grafana/dashboards/ledger-overview.json");
    assert.ok(existsSync(host), "monitoring/grafana/dashboards/ledger-overview.json is missing");
    assert.equal(JSON.parse(readFileSync(host, "utf8")).uid, "ledger-overview");
  });
});

describe(".env.example", () => {
  const example = read(".env.example");
  const documented = new Map(
    [...example.matchAll(/^#?\s*([A-Z][A-Z0-9_]*)=(.*)$/gm)].map(([, name, value]) => [name, value.trim()]),
  );

  test("documents every variable docker-compose.yml reads", () => {
    const used = [...new Set(variables(compose).map(([name]) => name))].sort();
    const missing = used.filter((name) => !documented.has(name));
    assert.deepEqual(missing, [], `not in .env.example: ${missing.join(", ")}`);
  });

  test("shows each variable's compose default, and compose uses one default per variable", () => {
    const defaults = new Map();
    for (const [name, fallback] of variables(compose)) {
      if (fallback === undefined) continue;
      if (defaults.has(name)) assert.equal(fallback, defaults.get(name), `${name} has two defaults in compose`);
      defaults.set(name, fallback);
    }
    for (const [name, fallback] of defaults) {
      assert.equal(documented.get(name), fallback, `.env.example ${name} should show the compose default`);
    }
  });

  test(".env is git-ignored", () => {
    assert.match(read(".gitignore"), /^\/?\.env$/m);
  });
});

describe("CI workflow", () => {
  const workflow = readYaml(".github/workflows/ci.yml");
  const steps = Object.values(workflow.jobs).flatMap((job) => job.steps ?? []);
  const runs = (re) => steps.filter((s) => re.test(s.run ?? ""));

  test("brings the stack up with docker compose, waits for health, runs the API tests", () => {
    assert.ok(runs(/docker compose up\b.*--build.*--wait|docker compose up\b.*--wait.*--build/).length > 0);
    const api = runs(/npm run test:api/);
    assert.ok(api.length > 0, "no step runs npm run test:api");
    const job = Object.values(workflow.jobs).find((j) => (j.steps ?? []).some((s) => api.includes(s)));
    assert.match(String(job.env?.API_URL ?? api[0].env?.API_URL), new RegExp(`^http://localhost:${DEFAULTS.PROXY_PORT}/?$`));
  });

  test("prints the compose logs on failure and always tears down with volumes", () => {
    assert.ok(runs(/docker compose logs/).some((s) => /failure\(\)/.test(s.if ?? "")), "no `docker compose logs` on failure");
    assert.ok(runs(/docker compose down -v/).some((s) => /always\(\)/.test(s.if ?? "")), "no `docker compose down -v` always");
  });

  test("cargo test runs against PostgreSQL and Redis service containers with the compose images", () => {
    const job = Object.values(workflow.jobs).find((j) => (j.steps ?? []).some((s) => /cargo test/.test(s.run ?? "")));
    assert.ok(job, "no job runs cargo test");
    assert.equal(job.services?.postgres?.image, services.postgres.image);
    assert.equal(job.services?.redis?.image, services.redis.image);
    assert.match(job.env?.DATABASE_URL ?? "", /^postgres:\/\/postgres:[^@]+@localhost:5432\/\w+$/);
  });

  test("the Rust toolchain is the Dockerfile's", () => {
    const image = read("docker/service.Dockerfile").match(/^FROM\s+rust:(\d+\.\d+\.\d+)/m)?.[1];
    assert.equal(String(workflow.env?.RUST_TOOLCHAIN), image);
  });
});
