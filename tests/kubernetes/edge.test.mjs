// nginx's edge controls on Kubernetes: the pod writes /etc/nginx/edge/ at start from the
// ledger-edge settings (the generator is nginx/edge/generate.sh, byte for byte); off in dev,
// rate limits on in production behind trusted proxies; the optional Ingress (components/
// ingress-tls) serves HTTPS for exactly the Host names nginx accepts, to nginx's Service port.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { environment, generated, named, ofKind, read, render, VARIANTS } from "./render.mjs";

for (const variant of VARIANTS) {
  describe(`kubernetes ${variant.name}: nginx's edge controls`, () => {
    const objs = render(variant);
    const spec = named(objs, "Deployment", "nginx").spec.template.spec;
    const nginx = spec.containers.find((c) => c.name === "nginx");
    const env = environment(objs, nginx);

    test("the entrypoint script and the generator are the repository's files, executable, and edge/ is writable", () => {
      const scripts = generated(objs, "ConfigMap", "nginx-edge-scripts");
      assert.equal(scripts.data["generate.sh"], read("nginx/edge/generate.sh"));
      assert.equal(scripts.data["entrypoint.sh"], read("nginx/edge/entrypoint.sh"));
      const volume = (mountPath) => {
        const m = nginx.volumeMounts.find((v) => v.mountPath === mountPath);
        assert.ok(m, `nothing mounted at ${mountPath}`);
        return { m, v: spec.volumes.find((v) => v.name === m.name) };
      };
      const hook = volume("/docker-entrypoint.d/40-ledger-edge.sh");
      assert.equal(hook.m.subPath, "entrypoint.sh");
      assert.equal(hook.v.configMap.name, scripts.metadata.name);
      assert.equal(hook.v.configMap.defaultMode & 0o111, 0o111, "the image's entrypoint runs executable scripts only");
      assert.equal(volume("/etc/nginx/ledger-edge").v.configMap.name, scripts.metadata.name);
      assert.ok(volume("/etc/nginx/edge").v.emptyDir, "/etc/nginx/edge must be writable (the root filesystem is read-only)");
    });

    if (variant.overlay === "production") {
      test("production: rate limits on, behind trusted proxies, for named hosts", () => {
        assert.ok(Number(env.RATE_LIMIT_RPS) > 0, `RATE_LIMIT_RPS=${env.RATE_LIMIT_RPS}`);
        assert.ok(Number(env.RATE_LIMIT_BURST) >= Number(env.RATE_LIMIT_RPS));
        assert.match(env.TRUSTED_PROXIES, /^[0-9a-f.:/,]+$/i, "behind the Ingress controller every client would share its address");
        assert.ok(env.ALLOWED_HOSTS, "ALLOWED_HOSTS is empty in production");
        // docs/deploy.md states the values.
        const docs = read("docs/deploy.md");
        for (const name of ["RATE_LIMIT_RPS", "RATE_LIMIT_BURST", "RATE_LIMIT_LIST_PER_MINUTE", "RATE_LIMIT_CONN"]) {
          assert.ok(docs.includes(`${name}=${env[name]}`), `docs/deploy.md does not state ${name}=${env[name]}`);
        }
      });
    } else {
      test(`${variant.overlay}: rate limits off, no proxy trusted, any Host`, () => {
        assert.equal(env.RATE_LIMIT_RPS, "0");
        assert.equal(env.TRUSTED_PROXIES, "");
        assert.equal(env.ALLOWED_HOSTS, "");
      });
    }

    for (const ingress of ofKind(objs, "Ingress")) {
      test(`Ingress ${ingress.metadata.name}: HTTPS by cert-manager for the hosts nginx accepts, to nginx's Service port`, () => {
        assert.ok(ingress.metadata.annotations["cert-manager.io/cluster-issuer"], "no cert-manager issuer annotation");
        const tlsHosts = ingress.spec.tls.flatMap((t) => t.hosts);
        const ruleHosts = ingress.spec.rules.map((r) => r.host);
        assert.deepEqual([...new Set(ruleHosts)].sort(), [...new Set(tlsHosts)].sort(), "a host without a certificate");
        const allowed = env.ALLOWED_HOSTS.split(",").filter(Boolean);
        if (allowed.length > 0) {
          for (const host of ruleHosts) {
            assert.ok(allowed.some((a) => a === host || (a.startsWith(".") && (host === a.slice(1) || host.endsWith(a)))),
              `${host} is not in ALLOWED_HOSTS (${env.ALLOWED_HOSTS}): nginx would answer 421`);
          }
        }
        const service = named(objs, "Service", "nginx");
        for (const path of ingress.spec.rules.flatMap((r) => r.http.paths)) {
          assert.equal(path.backend.service.name, "nginx");
          assert.ok(service.spec.ports.some((p) => p.name === path.backend.service.port.name), "no such port on Service nginx");
        }
      });
    }
  });
}
