// What production adds and dev must not need: autoscaling, disruption budgets and topology
// spread for the writer, the reader and nginx; dev runs its own PostgreSQL and Redis. Both:
// each service with its own PostgreSQL role and Redis user, no password in git (issue 21).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { environment, named, ofKind, read, render, ROOT, selects, VARIANTS } from "./render.mjs";

for (const variant of VARIANTS.filter((v) => v.overlay === "production")) {
  describe(`kubernetes ${variant.name}: availability`, () => {
    const objs = render(variant);

    for (const name of ["writer", "reader"]) {
      test(`${name}: a HorizontalPodAutoscaler of at least 2 pods owns the replica count`, () => {
        const hpa = ofKind(objs, "HorizontalPodAutoscaler").find((h) => h.spec.scaleTargetRef.name === name);
        assert.ok(hpa, "HorizontalPodAutoscaler");
        assert.equal(hpa.spec.scaleTargetRef.kind, "Deployment");
        assert.ok(hpa.spec.minReplicas >= 2, `minReplicas ${hpa.spec.minReplicas}`);
        assert.ok(hpa.spec.maxReplicas > hpa.spec.minReplicas);
        assert.ok(hpa.spec.metrics.some((m) => m.resource?.name === "cpu"));
        const d = named(objs, "Deployment", name);
        assert.equal(d.spec.replicas, undefined, "spec.replicas would reset the autoscaler on every apply");
        assert.ok(d.spec.template.spec.containers[0].resources.requests.cpu, "CPU utilisation needs a CPU request");
      });
    }

    for (const name of ["writer", "reader", "nginx"]) {
      const d = named(objs, "Deployment", name);
      const labels = d.spec.template.metadata.labels;

      test(`${name}: a PodDisruptionBudget keeps pods serving during a drain`, () => {
        const pdbs = ofKind(objs, "PodDisruptionBudget").filter((p) => selects(p.spec.selector, labels));
        assert.equal(pdbs.length, 1);
        const [pdb] = pdbs;
        const minPods = name === "nginx" ? d.spec.replicas : ofKind(objs, "HorizontalPodAutoscaler").find((h) => h.spec.scaleTargetRef.name === name).spec.minReplicas;
        const evictable = pdb.spec.maxUnavailable ?? minPods - pdb.spec.minAvailable;
        assert.ok(evictable >= 1 && evictable < minPods, `${evictable} of ${minPods} pods may go at once`);
      });

      test(`${name}: pods spread over nodes (required) and zones`, () => {
        const tsc = d.spec.template.spec.topologySpreadConstraints ?? [];
        const byKey = Object.fromEntries(tsc.map((c) => [c.topologyKey, c]));
        assert.equal(byKey["kubernetes.io/hostname"]?.whenUnsatisfiable, "DoNotSchedule");
        assert.ok(byKey["topology.kubernetes.io/zone"], "zone spread");
        for (const c of tsc) assert.ok(selects(c.labelSelector, labels), `${c.topologyKey}: selects its own pods`);
      });
    }

    test("Redis comes from a Secret per service made outside the repository; no Redis runs in the cluster", () => {
      assert.equal(named(objs, "Deployment", "redis"), undefined);
      for (const name of ["writer", "reader"]) {
        assert.equal(named(objs, "Secret", `ledger-redis-${name}`), undefined, "the URL must not be in git");
        const c = named(objs, "Deployment", name).spec.template.spec.containers[0];
        assert.equal(environment(objs, c).REDIS_URL, `<ledger-redis-${name}.url>`);
      }
    });

    test("least privilege: each service its own role, the writer migrates as the owner, no password in git", () => {
      const env = (name) => environment(objs, named(objs, "Deployment", name).spec.template.spec.containers[0]);
      assert.match(env("writer").DATABASE_URL, /^postgres:\/\/<ledger-db-writer\.username>:<ledger-db-writer\.password>@/);
      assert.match(env("writer").MIGRATION_DATABASE_URL, /^postgres:\/\/<ledger-db-app\.username>:<ledger-db-app\.password>@/);
      assert.match(env("reader").DATABASE_URL, /^postgres:\/\/<ledger-db-reader\.username>:<ledger-db-reader\.password>@/);
      assert.equal(env("reader").MIGRATION_DATABASE_URL, undefined, "the reader never migrates");
      const [cluster] = ofKind(objs, "Cluster");
      const roles = Object.fromEntries(cluster.spec.managed.roles.map((r) => [r.name, r.passwordSecret.name]));
      assert.deepEqual(roles, { ledger_writer: "ledger-db-writer", ledger_reader: "ledger-db-reader" });
      for (const secret of ["ledger-db-writer", "ledger-db-reader"]) assert.equal(named(objs, "Secret", secret), undefined);
    });
  });
}

for (const variant of VARIANTS.filter((v) => v.overlay === "dev")) {
  describe(`kubernetes ${variant.name}: a laptop cluster`, () => {
    const objs = render(variant);

    test("the services reach PostgreSQL and Redis Services of the overlay", () => {
      for (const name of ["writer", "reader"]) {
        const env = environment(objs, named(objs, "Deployment", name).spec.template.spec.containers[0]);
        const db = new URL(env.DATABASE_URL);
        const redis = new URL(env.REDIS_URL);
        assert.ok(named(objs, "Service", db.hostname), `Service ${db.hostname}`);
        assert.ok(named(objs, "Service", redis.hostname), `Service ${redis.hostname}`);
        assert.equal(named(objs, "Service", db.hostname).spec.ports[0].port, Number(db.port));
      }
      assert.equal(ofKind(objs, "Cluster").length, 0, "no operator needed");
    });

    test("least privilege: the roles provisioned by a Job running scripts/sql/roles.sql, each service its own", () => {
      const job = named(objs, "Job", "db-roles");
      assert.ok(job, "Job db-roles");
      const sql = ofKind(objs, "ConfigMap").find((c) => c.metadata.name.startsWith("ledger-roles-sql"));
      assert.equal(sql?.data["roles.sql"], read("scripts/sql/roles.sql"));
      const users = Object.fromEntries(["writer", "reader"].map((name) => {
        const env = environment(objs, named(objs, "Deployment", name).spec.template.spec.containers[0]);
        return [name, [new URL(env.DATABASE_URL).username, new URL(env.REDIS_URL).username]];
      }));
      assert.deepEqual(users, { writer: ["ledger_writer", "ledger-writer-tm-"], reader: ["ledger_reader", "ledger-reader-tm-"] });
    });

    test("Redis: the default user off, the ACL rules of scripts/lib/roles.sh", () => {
      const command = named(objs, "Deployment", "redis").spec.template.spec.containers[0].command.join(" ");
      assert.match(command, /--user default off/);
      for (const kind of ["writer", "reader"]) {
        const rules = execFileSync("bash", ["-c", `. scripts/lib/roles.sh; redis_acl_rules ${kind} tm:`], { cwd: ROOT, encoding: "utf8" }).trim();
        assert.ok(command.replace(/\s+/g, " ").includes(rules), `${kind}: ${rules}`);
      }
    });
  });
}
