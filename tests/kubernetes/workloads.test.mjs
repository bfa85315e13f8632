// Invariants of every workload in every overlay (and with every optional component), on the
// objects `kubectl kustomize` renders, so an edit to the base or an overlay cannot drop them:
// the compose images, a hardened securityContext, distinct liveness and readiness probes,
// resources, a grace period longer than the services' own shutdown timeout.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { composeImages, environment, render, settingDefaultMs, VARIANTS, workloads } from "./render.mjs";

const COMPOSE_IMAGES = composeImages();
// The writer and the reader are built (docker/service.Dockerfile), under these names.
const BUILT = { writer: "ledger-writer", reader: "ledger-reader" };

/** The probe's handler alone (what it checks), without its timing. */
const handler = (probe) => {
  const { httpGet, tcpSocket, exec, grpc } = probe ?? {};
  return JSON.stringify({ httpGet, tcpSocket, exec, grpc });
};

/** Seconds a preStop hook sleeps (`sleep N` anywhere in its command), else 0. */
function preStopSeconds(container) {
  const command = container.lifecycle?.preStop?.exec?.command?.join(" ") ?? "";
  const sleep = container.lifecycle?.preStop?.sleep?.seconds;
  const m = command.match(/\bsleep\s+([0-9]+)/);
  return sleep ?? (m ? Number(m[1]) : 0);
}

for (const variant of VARIANTS) {
  describe(`kubernetes ${variant.name}: every workload`, () => {
    const objs = render(variant);
    const all = workloads(objs);

    test("has the writer, the reader and nginx", () => {
      const names = all.map((w) => w.metadata.name);
      for (const name of ["writer", "reader", "nginx"]) assert.ok(names.includes(name), `${name} missing: ${names}`);
    });

    for (const w of all) {
      const spec = w.spec.template.spec;
      const podSc = spec.securityContext ?? {};
      const containers = [...(spec.initContainers ?? []), ...spec.containers];

      test(`${w.kind}/${w.metadata.name} runs non-root, read-only, without privileges, with seccomp`, () => {
        assert.equal(podSc.runAsNonRoot, true, "pod runAsNonRoot");
        for (const c of containers) {
          const sc = c.securityContext ?? {};
          assert.equal(sc.runAsNonRoot ?? podSc.runAsNonRoot, true, `${c.name}: runAsNonRoot`);
          assert.equal(sc.readOnlyRootFilesystem, true, `${c.name}: readOnlyRootFilesystem`);
          assert.equal(sc.allowPrivilegeEscalation, false, `${c.name}: allowPrivilegeEscalation`);
          assert.ok(sc.capabilities?.drop?.includes("ALL"), `${c.name}: capabilities.drop ALL`);
          assert.deepEqual(sc.capabilities?.add ?? [], [], `${c.name}: no capability added`);
          assert.equal((sc.seccompProfile ?? podSc.seccompProfile)?.type, "RuntimeDefault", `${c.name}: seccomp`);
          assert.notEqual(sc.privileged, true, `${c.name}: privileged`);
        }
        assert.notEqual(spec.hostNetwork, true);
        assert.notEqual(spec.hostPID, true);
      });

      test(`${w.kind}/${w.metadata.name} has distinct liveness and readiness probes`, () => {
        for (const c of spec.containers) {
          assert.ok(c.livenessProbe, `${c.name}: livenessProbe`);
          assert.ok(c.readinessProbe, `${c.name}: readinessProbe`);
          assert.notEqual(handler(c.livenessProbe), handler(c.readinessProbe), `${c.name}: both probes check the same thing`);
        }
      });

      test(`${w.kind}/${w.metadata.name} requests CPU and memory and limits memory`, () => {
        for (const c of containers) {
          assert.ok(c.resources?.requests?.cpu, `${c.name}: requests.cpu`);
          assert.ok(c.resources?.requests?.memory, `${c.name}: requests.memory`);
          assert.ok(c.resources?.limits?.memory, `${c.name}: limits.memory`);
        }
      });

      test(`${w.kind}/${w.metadata.name} runs the image docker compose runs`, () => {
        for (const c of spec.containers) {
          const name = w.metadata.name;
          if (BUILT[name]) {
            const repo = c.image.replace(/[:@].*$/, "").split("/").pop();
            assert.equal(repo, BUILT[name], `${c.name}: ${c.image}`);
            assert.match(c.image, /:[A-Za-z0-9._-]+$/, `${c.name}: a pinned tag`);
          } else {
            assert.equal(c.image, COMPOSE_IMAGES[name], `${name}: compose runs ${COMPOSE_IMAGES[name]}`);
          }
        }
      });
    }

    for (const name of ["writer", "reader"]) {
      test(`${name}: terminationGracePeriodSeconds > preStop pause + SHUTDOWN_TIMEOUT_MS`, () => {
        const w = all.find((x) => x.kind === "Deployment" && x.metadata.name === name);
        const c = w.spec.template.spec.containers[0];
        const env = environment(objs, c);
        const shutdownMs = Number(env.SHUTDOWN_TIMEOUT_MS ?? settingDefaultMs("SHUTDOWN_TIMEOUT_MS"));
        assert.ok(Number.isFinite(shutdownMs), `SHUTDOWN_TIMEOUT_MS=${env.SHUTDOWN_TIMEOUT_MS}`);
        const grace = w.spec.template.spec.terminationGracePeriodSeconds ?? 30;
        const needed = preStopSeconds(c) + shutdownMs / 1000;
        assert.ok(grace > needed, `grace ${grace} s <= preStop ${preStopSeconds(c)} s + shutdown ${shutdownMs} ms`);
      });

      test(`${name}: probes use the endpoints the binary serves (/ping on the API port, /health on the metrics port)`, () => {
        const c = all.find((x) => x.metadata.name === name).spec.template.spec.containers[0];
        const env = environment(objs, c);
        const port = (p) => c.ports.find((x) => x.name === p.httpGet.port)?.containerPort ?? p.httpGet.port;
        const apiPort = Number(env.LISTEN_ADDR.split(":").pop());
        const metricsPort = Number(env.METRICS_ADDR.split(":").pop());
        const served = new Set([`${apiPort} /ping`, `${metricsPort} /health`, `${metricsPort} /metrics`]);
        for (const probe of [c.startupProbe, c.livenessProbe, c.readinessProbe].filter(Boolean)) {
          assert.ok(served.has(`${port(probe)} ${probe.httpGet.path}`), `${port(probe)} ${probe.httpGet.path} is not served`);
        }
        assert.ok(env.LISTEN_ADDR.startsWith("0.0.0.0:") && env.METRICS_ADDR.startsWith("0.0.0.0:"), "listens on the pod's address");
      });
    }
  });
}
