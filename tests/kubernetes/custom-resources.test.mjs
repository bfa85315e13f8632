// Custom resources, which kubernetes-validate has no schema for: every field set is checked
// against the project's own list (custom-resources.mjs), and what the fields mean is checked
// against the rest of the rendered objects.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { check, KNOWN } from "./custom-resources.mjs";
import { environment, generated, named, ofKind, render, selects, VARIANTS } from "./render.mjs";

// The built-in kinds kubernetes-validate checks; anything else must be listed in KNOWN.
const BUILT_IN = new Set([
  "v1 Namespace", "v1 ConfigMap", "v1 Secret", "v1 Service",
  "apps/v1 Deployment", "apps/v1 StatefulSet", "batch/v1 Job",
  "networking.k8s.io/v1 NetworkPolicy", "networking.k8s.io/v1 Ingress",
  "autoscaling/v2 HorizontalPodAutoscaler", "policy/v1 PodDisruptionBudget",
]);

test("the field list rejects an unknown field, a wrong type and a bad value (it can fail)", () => {
  const type = KNOWN["postgresql.cnpg.io/v1 Cluster"];
  const base = { apiVersion: "postgresql.cnpg.io/v1", kind: "Cluster", metadata: { name: "x" }, spec: { instances: 3, storage: { size: "1Gi" } } };
  assert.deepEqual(check(base, type), []);
  assert.match(check({ ...base, spec: { ...base.spec, instance: 3 } }, type).join("\n"), /\.spec\.instance: not a known field/);
  assert.match(check({ ...base, spec: { ...base.spec, instances: "3" } }, type).join("\n"), /\.spec\.instances: expected an integer/);
  assert.match(check({ ...base, spec: { ...base.spec, postgresql: { parameters: { max_connections: 200 } } } }, type).join("\n"), /max_connections: expected a string/);
  assert.match(check({ ...base, spec: { instances: 3 } }, type).join("\n"), /\.spec\.storage: required/);
});

for (const variant of VARIANTS) {
  describe(`kubernetes ${variant.name}: custom resources`, () => {
    const objs = render(variant);

    test("every object is a built-in kind or a custom kind with a field list", () => {
      for (const o of objs) {
        const id = `${o.apiVersion} ${o.kind}`;
        assert.ok(BUILT_IN.has(id) || KNOWN[id], `${id} (${o.metadata?.name}): no schema and no field list`);
      }
    });

    for (const o of objs.filter((x) => KNOWN[`${x.apiVersion} ${x.kind}`])) {
      test(`${o.kind}/${o.metadata.name}: every field is known and well-typed`, () => {
        assert.deepEqual(check(o, KNOWN[`${o.apiVersion} ${o.kind}`]), []);
      });
    }

    for (const sm of ofKind(objs, "ServiceMonitor")) {
      test(`ServiceMonitor/${sm.metadata.name} selects a Service with its ports, and names the job as compose does`, () => {
        const services = ofKind(objs, "Service").filter((s) => selects(sm.spec.selector, s.metadata.labels));
        assert.equal(services.length, 1, "exactly one Service");
        const [svc] = services;
        for (const ep of sm.spec.endpoints) {
          assert.ok(svc.spec.ports.some((p) => p.name === ep.port), `Service ${svc.metadata.name} has no port ${ep.port}`);
        }
        // compose's Prometheus names the jobs writer and reader; the dashboard and the rules use them.
        assert.equal(svc.metadata.labels[sm.spec.jobLabel], sm.metadata.name);
        assert.ok(["writer", "reader"].includes(sm.metadata.name));
      });
    }

    for (const cluster of ofKind(objs, "Cluster")) {
      const name = cluster.metadata.name;
      test(`Cluster/${name}: synchronous standbys exist, and the bootstrap database is the services' DB_NAME`, () => {
        const sync = cluster.spec.postgresql?.synchronous;
        assert.ok(sync, "synchronous replication: a failover must not lose an acknowledged write");
        assert.ok(sync.number >= 1 && sync.number < cluster.spec.instances, `${sync.number} of ${cluster.spec.instances - 1} standbys`);
        const settings = generated(objs, "ConfigMap", "ledger-settings");
        assert.equal(cluster.spec.bootstrap.initdb.database, settings.data.DB_NAME);
      });

      // Each service serves as its own role (a Secret per role, which the Cluster's managed
      // roles take their passwords from); the writer migrates as the owner (-app).
      const urls = [
        ["writer", "DATABASE_URL", "ledger-db-writer"],
        ["writer", "MIGRATION_DATABASE_URL", `${name}-app`],
        ["reader", "DATABASE_URL", "ledger-db-reader"],
      ];
      for (const [service, variable, secret] of urls) {
        test(`${service}'s ${variable}: Cluster/${name} through ${name}-rw (never a replica) with ${secret}'s credentials`, () => {
          const c = named(objs, "Deployment", service).spec.template.spec.containers[0];
          const url = new URL(environment(objs, c)[variable]);
          // -rw is the primary: a replica (-ro, -r) may not have replayed a write yet, and the
          // reader falls back to PostgreSQL exactly when it must be right.
          assert.equal(url.hostname, `${name}-rw`);
          assert.equal(decodeURIComponent(url.username), `<${secret}.username>`);
          assert.equal(decodeURIComponent(url.password), `<${secret}.password>`);
          assert.equal(url.pathname, `/${cluster.spec.bootstrap.initdb.database}`);
          const managed = (cluster.spec.managed?.roles ?? []).map((role) => role.passwordSecret?.name);
          if (secret !== `${name}-app`) assert.ok(managed.includes(secret), `no managed role takes ${secret}`);
        });
      }
    }
  });
}
