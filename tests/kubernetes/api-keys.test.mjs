// API keys on Kubernetes (components/api-keys): in production the writer and the reader read
// API_KEYS_FILE from the ledger-api-keys Secret, mounted read-only, and nginx counts per key;
// in dev they are off (the contract's behaviour).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { environment, named, render, VARIANTS } from "./render.mjs";

for (const variant of VARIANTS) {
  describe(`kubernetes ${variant.name}: API keys`, () => {
    const objs = render(variant);
    const nginx = named(objs, "Deployment", "nginx").spec.template.spec.containers.find((c) => c.name === "nginx");
    const nginxEnv = environment(objs, nginx);
    for (const service of ["writer", "reader"]) {
      test(`${service}: ${variant.overlay === "production" ? "reads the keys Secret, and nginx knows" : "no API keys"}`, () => {
        const spec = named(objs, "Deployment", service).spec.template.spec;
        const container = spec.containers.find((c) => c.name === service);
        const file = environment(objs, container).API_KEYS_FILE ?? "";
        if (variant.overlay !== "production") {
          assert.equal(file, "");
          assert.equal(nginxEnv.API_KEYS_FILE ?? "", "");
          return;
        }
        const mount = (container.volumeMounts ?? []).find((m) => file.startsWith(`${m.mountPath}/`));
        assert.ok(mount, `API_KEYS_FILE=${file} is not on a mounted volume`);
        assert.equal(mount.readOnly, true);
        const volume = spec.volumes.find((v) => v.name === mount.name);
        assert.equal(volume.secret?.secretName, "ledger-api-keys");
        assert.equal(nginxEnv.API_KEYS_FILE, file, "nginx must count per key when the services check keys");
      });
    }
  });
}
