// The compose network split (docs/deploy.md), asserted on the rendered NetworkPolicies: who
// may connect to whom, on which port. Pods are described by the labels their templates carry.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mayConnect, pod } from "./network.mjs";
import { named, ofKind, render, VARIANTS } from "./render.mjs";

const NS = "ledger";

for (const variant of VARIANTS) {
  describe(`kubernetes ${variant.name}: network policies mirror the compose networks`, () => {
    const objs = render(variant);
    const policies = ofKind(objs, "NetworkPolicy");
    const labelsOf = (name) => {
      const w = objs.find((o) => ["Deployment", "StatefulSet"].includes(o.kind) && o.metadata.name === name);
      assert.ok(w, `workload ${name}`);
      return w.spec.template.metadata.labels;
    };
    const nginx = pod(NS, labelsOf("nginx"));
    const writer = pod(NS, labelsOf("writer"));
    const reader = pod(NS, labelsOf("reader"));
    // The data stores: in dev our own pods; in production CloudNativePG's instances (the
    // operator's cnpg.io/cluster label plus spec.inheritedMetadata) and a Redis outside.
    const cluster = ofKind(objs, "Cluster")[0];
    const postgres = cluster
      ? pod(NS, { ...cluster.spec.inheritedMetadata?.labels, "cnpg.io/cluster": cluster.metadata.name })
      : pod(NS, labelsOf("postgres"));
    const redis = named(objs, "Deployment", "redis") ? pod(NS, labelsOf("redis")) : pod("elsewhere", {});
    const prometheus = pod("monitoring", { "app.kubernetes.io/name": "prometheus" });
    const grafana = pod("monitoring", { "app.kubernetes.io/name": "grafana" });
    const stranger = pod("default", { app: "something-else" });
    const sameNsStranger = pod(NS, { app: "debug-shell" });

    test("every pod of the namespace is denied ingress by default", () => {
      assert.ok(policies.some((p) => Object.keys(p.spec.podSelector.matchLabels ?? {}).length === 0 &&
        (p.spec.policyTypes ?? ["Ingress"]).includes("Ingress") && !(p.spec.ingress?.length)));
    });

    test("the request path is open: clients -> nginx -> writer, reader -> PostgreSQL, Redis", () => {
      assert.ok(mayConnect(policies, stranger, nginx, 8080), "clients -> nginx:8080");
      assert.ok(mayConnect(policies, nginx, writer, 8081), "nginx -> writer:8081");
      assert.ok(mayConnect(policies, nginx, reader, 8082), "nginx -> reader:8082");
      for (const svc of [writer, reader]) {
        assert.ok(mayConnect(policies, svc, postgres, 5432), "-> postgres:5432");
        assert.ok(mayConnect(policies, svc, redis, 6379), "-> redis:6379");
      }
    });

    test("the API ports admit nginx only", () => {
      for (const from of [stranger, sameNsStranger, prometheus, postgres]) {
        assert.equal(mayConnect(policies, from, writer, 8081), false, "writer:8081");
        assert.equal(mayConnect(policies, from, reader, 8082), false, "reader:8082");
      }
    });

    test("the monitoring side scrapes the metrics ports and reaches nothing else", () => {
      assert.ok(mayConnect(policies, prometheus, writer, 9181), "prometheus -> writer:9181");
      assert.ok(mayConnect(policies, prometheus, reader, 9182), "prometheus -> reader:9182");
      for (const port of [5432, 6379]) {
        assert.equal(mayConnect(policies, prometheus, postgres, port), false, `prometheus -> postgres:${port}`);
        assert.equal(mayConnect(policies, grafana, postgres, port), false, `grafana -> postgres:${port}`);
      }
      if (redis.namespace === NS) assert.equal(mayConnect(policies, prometheus, redis, 6379), false, "prometheus -> redis");
      assert.equal(mayConnect(policies, prometheus, nginx, 9181), false);
      assert.equal(mayConnect(policies, stranger, writer, 9181), false, "a stranger -> writer:9181");
    });

    test("the data stores admit the writer and the reader only", () => {
      for (const from of [nginx, stranger, sameNsStranger]) {
        assert.equal(mayConnect(policies, from, postgres, 5432), false, `-> postgres:5432`);
        if (redis.namespace === NS) assert.equal(mayConnect(policies, from, redis, 6379), false, `-> redis:6379`);
      }
    });

    test("the application side reaches neither Prometheus, Grafana nor node-exporter", () => {
      for (const from of [nginx, writer, reader]) {
        assert.equal(mayConnect(policies, from, prometheus, 9090), false, "-> prometheus:9090");
        assert.equal(mayConnect(policies, from, grafana, 3000), false, "-> grafana:3000");
        assert.equal(mayConnect(policies, from, pod("monitoring", {}), 9100), false, "-> node-exporter:9100");
      }
      assert.equal(mayConnect(policies, nginx, postgres, 5432), false, "nginx -> postgres");
    });
  });
}
