// The configuration files reach the cluster unchanged: the Grafana dashboard ConfigMap holds
// monitoring/grafana/dashboards/ledger-overview.json and nginx runs nginx/nginx.conf with
// nginx/kubernetes/ as its env/, byte for byte; and what those files name exists (the
// upstreams' Services and ports, the Services' pods and container ports).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { generated, named, ofKind, read, render, selects, VARIANTS, workloads } from "./render.mjs";

const DASHBOARD = "monitoring/grafana/dashboards/ledger-overview.json";

for (const variant of VARIANTS) {
  describe(`kubernetes ${variant.name}: configuration`, () => {
    const objs = render(variant);

    test("the dashboard ConfigMap is the dashboard JSON file, labelled for Grafana's sidecar", () => {
      const cm = generated(objs, "ConfigMap", "ledger-dashboards");
      assert.ok(cm, "ConfigMap ledger-dashboards");
      assert.equal(cm.data["ledger-overview.json"], read(DASHBOARD));
      assert.equal(cm.metadata.labels?.grafana_dashboard, "1");
    });

    test("nginx mounts nginx/nginx.conf as /etc/nginx/nginx.conf and nginx/kubernetes/ as /etc/nginx/env", () => {
      const spec = named(objs, "Deployment", "nginx").spec.template.spec;
      const c = spec.containers.find((x) => x.name === "nginx");
      const mounted = (mountPath) => {
        const m = c.volumeMounts.find((v) => v.mountPath === mountPath);
        assert.ok(m, `nothing mounted at ${mountPath}`);
        const cmName = spec.volumes.find((v) => v.name === m.name)?.configMap?.name;
        const cm = named(objs, "ConfigMap", cmName);
        assert.ok(cm, `ConfigMap ${cmName} of volume ${m.name} is not rendered`);
        return { m, cm };
      };
      const conf = mounted("/etc/nginx/nginx.conf");
      assert.equal(conf.cm.data[conf.m.subPath], read("nginx/nginx.conf"));
      const env = mounted("/etc/nginx/env");
      const files = readdirSync(`${process.cwd()}/nginx/kubernetes`).sort();
      assert.deepEqual(Object.keys(env.cm.data).sort(), files);
      for (const f of files) assert.equal(env.cm.data[f], read(`nginx/kubernetes/${f}`), f);
      // nginx.conf includes env/*.conf by these names.
      for (const inc of read("nginx/nginx.conf").matchAll(/include\s+env\/([^;]+);/g)) {
        assert.ok(files.includes(inc[1]), `nginx.conf includes env/${inc[1]}`);
      }
    });

    test("every upstream server of nginx/kubernetes is a Service port in the rendered objects", () => {
      const servers = [...read("nginx/kubernetes/upstreams.conf").matchAll(/^\s*server\s+([a-z0-9-]+):([0-9]+)/gm)];
      assert.ok(servers.length >= 2, "no upstream servers found");
      for (const [, host, port] of servers) {
        const svc = named(objs, "Service", host);
        assert.ok(svc, `no Service ${host}`);
        assert.ok(svc.spec.ports.some((p) => p.port === Number(port)), `Service ${host} has no port ${port}`);
        assert.notEqual(svc.spec.clusterIP, "None", `${host} must keep one stable address (not headless)`);
      }
    });

    test("every Service selects pods whose containers have its target ports", () => {
      const pods = workloads(objs).map((w) => w.spec.template);
      for (const svc of ofKind(objs, "Service")) {
        const matching = pods.filter((t) => selects({ matchLabels: svc.spec.selector }, t.metadata.labels));
        assert.ok(matching.length > 0, `Service ${svc.metadata.name} selects no pods`);
        for (const p of svc.spec.ports) {
          for (const t of matching) {
            const ports = t.spec.containers.flatMap((c) => c.ports ?? []);
            const ok = ports.some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort);
            assert.ok(ok, `Service ${svc.metadata.name}: no container port ${p.targetPort}`);
          }
        }
      }
    });

    test("every referenced ConfigMap is rendered, and every Secret is rendered or named in docs/deploy.md", () => {
      const docs = read("docs/deploy.md");
      const refs = JSON.stringify(workloads(objs)).matchAll(/"(configMapRef|configMapKeyRef|secretKeyRef|secretRef|configMap)":\{[^}]*?"name":"([^"]+)"/g);
      for (const [, kind, name] of refs) {
        const k = kind.startsWith("secret") ? "Secret" : "ConfigMap";
        if (named(objs, k, name)) continue;
        assert.equal(k, "Secret", `ConfigMap ${name} is not rendered`);
        assert.ok(docs.includes(name), `Secret ${name} is neither rendered nor documented in docs/deploy.md`);
      }
    });
  });
}
