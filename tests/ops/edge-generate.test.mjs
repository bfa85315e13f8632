// nginx/edge/generate.sh on its own (no nginx; scripts/check-containers.sh runs nginx -t on its
// output, tests/edge/ the result through nginx): nothing set writes comments only, so nginx
// does no work for the controls; a value of the wrong shape is refused, naming the setting,
// before it can reach nginx's configuration.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT } from "./compose-model.mjs";

function generate(settings) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "edge-generate-"));
  const run = spawnSync("sh", [path.join(ROOT, "nginx/edge/generate.sh"), path.join(dir, "edge")], {
    env: { PATH: process.env.PATH, ...settings },
    encoding: "utf8",
  });
  const files = run.status === 0
    ? Object.fromEntries(readdirSync(path.join(dir, "edge")).map((f) => [f, readFileSync(path.join(dir, "edge", f), "utf8")]))
    : {};
  rmSync(dir, { recursive: true, force: true });
  return { status: run.status, stderr: run.stderr, files };
}

const directives = (text) => text.split("\n").filter((line) => line.trim() && !line.trim().startsWith("#"));

test("with nothing set (or RATE_LIMIT_RPS=0) the three include files hold comments only", () => {
  for (const settings of [{}, { RATE_LIMIT_RPS: "0", RATE_LIMIT_CONN: "5" }]) {
    const { status, files } = generate(settings);
    assert.equal(status, 0);
    assert.deepEqual(Object.keys(files).sort(), ["http.conf", "proxy.conf", "server.conf"]);
    for (const [name, text] of Object.entries(files)) assert.deepEqual(directives(text), [], name);
  }
});

test("RATE_LIMIT_BURST defaults to RATE_LIMIT_RPS; without API keys there is no per-address zone", () => {
  const { files } = generate({ RATE_LIMIT_RPS: "7" });
  assert.match(files["proxy.conf"], /limit_req zone=edge_reads burst=7 nodelay;/);
  assert.match(files["http.conf"], /zone=edge_reads:10m rate=7r\/s;/);
  assert.doesNotMatch(files["http.conf"] + files["proxy.conf"], /edge_address/);
  const keyed = generate({ RATE_LIMIT_RPS: "7", API_KEYS_FILE: "/keys" }).files;
  assert.match(keyed["http.conf"], /zone=edge_address:10m rate=28r\/s;/);
  assert.match(keyed["proxy.conf"], /limit_req zone=edge_address burst=28 nodelay;/);
});

test("a value of the wrong shape is refused, naming the setting", () => {
  const cases = [
    [{ RATE_LIMIT_RPS: "ten" }, /RATE_LIMIT_RPS/],
    [{ RATE_LIMIT_RPS: "5", RATE_LIMIT_BURST: "-1" }, /RATE_LIMIT_BURST/],
    [{ RATE_LIMIT_RPS: "5", RATE_LIMIT_CONN: "0" }, /RATE_LIMIT_CONN/],
    [{ TRUSTED_PROXIES: "10.0.0.0/8;evil" }, /TRUSTED_PROXIES/],
    [{ ALLOWED_HOSTS: "api.example.com;return 200" }, /ALLOWED_HOSTS/],
    [{ ALLOWED_HOSTS: "a b{" }, /ALLOWED_HOSTS/],
    [{ TLS_CERT: "/etc/ssl/cert.pem" }, /TLS_CERT and TLS_KEY/],
    [{ TLS_CERT: "/nonexistent.pem", TLS_KEY: "/nonexistent.key" }, /TLS_CERT: cannot read/],
  ];
  for (const [settings, message] of cases) {
    const { status, stderr } = generate(settings);
    assert.notEqual(status, 0, JSON.stringify(settings));
    assert.match(stderr, message, JSON.stringify(settings));
  }
});
