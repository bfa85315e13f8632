// The edge controls through nginx, on the stack of scripts/test-edge.sh: unset, nginx answers as
// before; each setting on its own (rate and connection limits by address, by API key, behind a
// trusted proxy; accepted Host names; HTTPS) does what README's "Rate limits and HTTPS" says.
// Each case reconfigures nginx (lib.mjs) and sends from loopback addresses of its own.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { createHash } from "node:crypto";
import { ROOT } from "../lib/defaults.mjs";
import { PROXY_PORT, TLS_PORT, burst, reconfigure, request, statuses } from "./lib.mjs";

const scratch = mkdtempSync(path.join(os.tmpdir(), "edge-test-"));
// Started as root, the services run as nobody (scripts/launcher.sh) and read the keys file here.
chmodSync(scratch, 0o755);
process.on("exit", () => rmSync(scratch, { recursive: true, force: true }));

const count = (answers, status) => answers.filter((a) => a.status === status).length;
const deposit = () => JSON.stringify({ account_id: randomUUID(), amount: 1 });

/** The shape every 429 of nginx has: JSON naming the limit, the wait, and the IETF fields. */
function assertLimited(answer, policy, retryAfter) {
  assert.equal(answer.status, 429, answer.text);
  assert.match(answer.headers["content-type"], /^application\/json/);
  assert.equal(typeof answer.json?.error, "string", `429 body is not {"error": ...}: ${answer.text}`);
  assert.match(answer.json.error, /too many requests/);
  assert.equal(answer.headers["retry-after"], String(retryAfter));
  assert.match(answer.headers["ratelimit-policy"], new RegExp(`"${policy}";q=\\d+;w=\\d+`));
  assert.equal(answer.headers.ratelimit, `"${policy}";r=0;t=${retryAfter}`);
  assert.ok(answer.headers["x-request-id"], "429 without X-Request-Id");
}

const policyOn = (from, expected) => async () => {
  const answer = await request("GET", "/ping", { from });
  return answer.status === 200 && (answer.headers["ratelimit-policy"] ?? "").includes(expected);
};

test("with no edge setting nginx answers as before: no limits, any Host, no HTTPS port", async () => {
  await reconfigure({}, async () => {
    const answer = await request("GET", "/ping", { from: "127.0.0.2" });
    return answer.status === 200 && answer.headers["ratelimit-policy"] === undefined;
  });
  for (const file of readdirSync(path.join(ROOT, ".stack/edge-test/nginx/edge"))) {
    const text = readFileSync(path.join(ROOT, ".stack/edge-test/nginx/edge", file), "utf8");
    assert.deepEqual(text.split("\n").filter((l) => l.trim() && !l.startsWith("#")), [], `edge/${file} is not empty`);
  }
  const answers = await burst(60, () => request("GET", "/ping", { from: "127.0.0.2" }));
  assert.deepEqual([...new Set(statuses(answers))], [200]);
  for (const a of answers) {
    assert.equal(a.headers["ratelimit-policy"], undefined);
    assert.equal(a.headers["strict-transport-security"], undefined);
  }
  const other = await request("GET", `/accounts/${randomUUID()}`, { headers: { host: "anything.invalid" } });
  assert.equal(other.status, 404, other.text);
  const tlsPort = await request("GET", "/ping", { tls: { rejectUnauthorized: false } });
  assert.equal(tlsPort.status, 0, `something answers on the HTTPS port ${TLS_PORT} without TLS_CERT`);
});

test("rate limits by address: reads, writes and unpaged listings each have a zone; another address is not limited", async () => {
  await reconfigure({ RATE_LIMIT_RPS: "5", RATE_LIMIT_BURST: "5", RATE_LIMIT_LIST_PER_MINUTE: "6" },
    policyOn("127.0.0.10", '"reads";q=5;w=1;ledger-burst=5'));

  const reads = await burst(25, () => request("GET", `/accounts/${randomUUID()}`, { from: "127.0.0.11" }));
  assert.ok(count(reads, 429) >= 10, `only ${count(reads, 429)} of 25 reads at once got 429: ${statuses(reads)}`);
  assert.ok(count(reads, 404) >= 1, `no read got through: ${statuses(reads)}`);
  for (const a of reads.filter((x) => x.status === 429)) assertLimited(a, "reads", 1);
  for (const a of reads.filter((x) => x.status === 404)) {
    assert.match(a.headers["ratelimit-policy"], /^"reads";q=5;w=1;ledger-burst=5, "connections";q=32;qu="concurrent-requests"$/);
  }

  // Meanwhile: another address reads, and the same address still writes (its own zone).
  const other = await request("GET", `/accounts/${randomUUID()}`, { from: "127.0.0.12" });
  assert.equal(other.status, 404, other.text);
  const write = await request("POST", "/transactions", { from: "127.0.0.11", body: deposit() });
  assert.equal(write.status, 201, write.text);

  const writes = await burst(25, () => request("POST", "/transactions", { from: "127.0.0.13", body: deposit() }));
  assert.ok(count(writes, 429) >= 10, `writes: ${statuses(writes)}`);
  assert.equal(count(writes, 201) + count(writes, 429), 25, `writes: ${statuses(writes)}`);
  for (const a of writes.filter((x) => x.status === 429)) assertLimited(a, "writes", 1);

  // GET /transactions without limit= streams the whole ledger: 6 a minute, burst 2. A paged
  // listing is a read.
  const lists = [];
  for (let i = 0; i < 4; i++) lists.push(await request("GET", "/transactions", { from: "127.0.0.14" }));
  assert.deepEqual(statuses(lists).slice(0, 3), [200, 200, 200]);
  assertLimited(lists[3], "unpaged-list", 10);
  assert.match(lists[3].json.error, /\?limit=/);
  const paged = await request("GET", "/transactions?limit=1", { from: "127.0.0.14" });
  assert.equal(paged.status, 200, paged.text);
  const unpagedByAccount = await request("GET", `/transactions?account_id=${randomUUID()}`, { from: "127.0.0.14" });
  assert.equal(unpagedByAccount.status, 429, "an unpaged listing of one account is an unpaged listing too");
});

test("a connection limit per address: one request more than RATE_LIMIT_CONN in progress gets 429", async () => {
  await reconfigure({ RATE_LIMIT_RPS: "100", RATE_LIMIT_CONN: "3" }, policyOn("127.0.0.20", '"connections";q=3;'));
  // Three POSTs whose bodies never come stay in progress until client_body_timeout.
  const held = [];
  for (let i = 0; i < 3; i++) {
    const socket = net.connect({ host: "127.0.0.1", port: PROXY_PORT, localAddress: "127.0.0.21" });
    socket.on("error", () => {});
    socket.write("POST /transactions HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n");
    held.push(socket);
  }
  try {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const refused = await request("GET", "/ping", { from: "127.0.0.21" });
    assert.equal(refused.status, 429, refused.text);
    assert.match(refused.json?.error ?? "", /in progress at once from this address \(limit 3\)/);
    assert.equal(refused.headers["retry-after"], "1");
    const other = await request("GET", "/ping", { from: "127.0.0.22" });
    assert.equal(other.status, 200, other.text);
  } finally {
    for (const socket of held) socket.destroy();
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  const again = await request("GET", "/ping", { from: "127.0.0.21" });
  assert.equal(again.status, 200, "the connections ended, the address is served again");
});

test("behind a trusted proxy the client is the address it forwards; from anywhere else X-Forwarded-For is ignored", async () => {
  await reconfigure({ RATE_LIMIT_RPS: "5", RATE_LIMIT_BURST: "5", TRUSTED_PROXIES: "127.0.0.40/32" },
    policyOn("127.0.0.41", '"reads";q=5;'));
  const via = (client) => ({ from: "127.0.0.40", headers: { "x-forwarded-for": client } });

  const first = await burst(15, () => request("GET", `/accounts/${randomUUID()}`, via("203.0.113.7")));
  assert.ok(count(first, 429) >= 5, `client 203.0.113.7 through the proxy: ${statuses(first)}`);
  const second = await request("GET", `/accounts/${randomUUID()}`, via("203.0.113.8"));
  assert.equal(second.status, 404, "another client behind the same proxy is limited by the first");

  // An untrusted sender makes up a new X-Forwarded-For every time: still one client.
  const spoofed = await burst(15, (i) =>
    request("GET", `/accounts/${randomUUID()}`, { from: "127.0.0.42", headers: { "x-forwarded-for": `198.51.100.${i + 1}` } }));
  assert.ok(count(spoofed, 429) >= 5, `untrusted X-Forwarded-For escaped the limit: ${statuses(spoofed)}`);
});

test("ALLOWED_HOSTS: another Host gets a JSON 421; GET /ping stays open to health checks", async () => {
  await reconfigure({ ALLOWED_HOSTS: "api.example.test,.example.org" }, async () => {
    const answer = await request("GET", `/accounts/${randomUUID()}`, { headers: { host: "evil.invalid" } });
    return answer.status === 421;
  });
  for (const host of ["api.example.test", "API.Example.Test:8080", "example.org", "eu.example.org"]) {
    const answer = await request("GET", `/accounts/${randomUUID()}`, { headers: { host } });
    assert.equal(answer.status, 404, `${host}: ${answer.text}`);
  }
  for (const host of ["evil.invalid", "api.example.test.evil.invalid", "127.0.0.1"]) {
    const answer = await request("POST", "/transactions", { headers: { host }, body: deposit() });
    assert.equal(answer.status, 421, `${host}: ${answer.status} ${answer.text}`);
    assert.match(answer.headers["content-type"], /^application\/json/);
    assert.match(answer.json?.error ?? "", /Host/);
    assert.ok(answer.headers["x-request-id"]);
  }
  const ping = await request("GET", "/ping", { headers: { host: "10.1.2.3" } });
  assert.equal(ping.status, 200, ping.text);
});

/** A throw-away CA and a certificate it signed for localhost and 127.0.0.1 (openssl). */
function certificates() {
  const run = (...args) => execFileSync("openssl", args, { cwd: scratch, stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=edge test CA");
  run("req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost");
  writeFileSync(path.join(scratch, "san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "server.pem", "-days", "2", "-extfile", "san.ext");
  run("req", "-x509", ...ec, "-keyout", "other.key", "-out", "other-ca.pem", "-days", "2", "-subj", "/CN=another CA");
  return {
    cert: path.join(scratch, "server.pem"),
    key: path.join(scratch, "server.key"),
    ca: readFileSync(path.join(scratch, "ca.pem")),
    otherCa: readFileSync(path.join(scratch, "other-ca.pem")),
  };
}

test("TLS_CERT and TLS_KEY: HTTPS with the operator's certificate, TLS 1.2+ only, HSTS; plain HTTP keeps /ping only", async () => {
  const { cert, key, ca, otherCa } = certificates();
  const trusted = { ca, servername: "localhost" };
  await reconfigure({ TLS_CERT: cert, TLS_KEY: key }, async () => (await request("GET", "/ping", { tls: trusted })).status === 200);

  const ping = await request("GET", "/ping", { tls: trusted });
  assert.equal(ping.headers["strict-transport-security"], "max-age=31536000");
  const account = randomUUID();
  const created = await request("POST", "/transactions", { tls: trusted, body: JSON.stringify({ account_id: account, amount: 7 }) });
  assert.equal(created.status, 201, created.text);
  assert.equal(created.headers["strict-transport-security"], "max-age=31536000");
  const read = await request("GET", `/accounts/${account}`, { tls: trusted });
  assert.deepEqual([read.status, read.json?.balance], [200, 7]);

  const wrongCa = await request("GET", "/ping", { tls: { ca: otherCa, servername: "localhost" } });
  assert.equal(wrongCa.status, 0, "a client trusting another CA accepted the certificate");

  const plain = await request("GET", `/accounts/${account}`);
  assert.equal(plain.status, 403, plain.text);
  assert.match(plain.json?.error ?? "", /https/);
  const plainPing = await request("GET", "/ping");
  assert.equal(plainPing.status, 200);
  assert.equal(plainPing.headers["strict-transport-security"], undefined, "HSTS over plain HTTP");

  // TLS 1.1 is refused by nginx (the client here offers it and nothing newer).
  const old = await new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port: TLS_PORT, ca, servername: "localhost",
      minVersion: "TLSv1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" });
    socket.on("secureConnect", () => { socket.destroy(); resolve("connected"); });
    socket.on("error", (error) => resolve(error.code ?? error.message));
  });
  assert.notEqual(old, "connected", "nginx accepted TLS 1.1");
  const modern = await new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port: TLS_PORT, ca, servername: "localhost", maxVersion: "TLSv1.2" });
    socket.on("secureConnect", () => { resolve(socket.getProtocol()); socket.destroy(); });
    socket.on("error", (error) => resolve(error.code));
  });
  assert.equal(modern, "TLSv1.2");
});

/** An API keys file in the services' format: `<key-id> <scopes> <sha256-hex of the secret>`. */
function keysFile(secrets) {
  const file = path.join(scratch, "api-keys");
  const lines = Object.entries(secrets).map(([id, secret]) => `${id} read,write ${createHash("sha256").update(secret).digest("hex")}`);
  writeFileSync(file, lines.join("\n") + "\n", { mode: 0o644 });
  return file;
}

// Last but one: the services start again with the keys (they check them: 401 without a valid
// one), and the last test starts them again without.
test("with API keys on, the client is its key: another key from the same address is not limited, and new keys per request do not escape the per-address limit", async () => {
  const alice = `alice-${randomUUID()}`;
  const bob = `bob-${randomUUID()}`;
  await reconfigure({ RATE_LIMIT_RPS: "5", RATE_LIMIT_BURST: "5", API_KEYS_FILE: keysFile({ alice, bob }) },
    policyOn("127.0.0.30", '"per-address";q=20;w=1;ledger-burst=20'), { restart: true });
  const as = (secret) => ({ authorization: `Bearer ${secret}` });
  // The services check the keys behind nginx's limits.
  const anonymous = await request("GET", `/accounts/${randomUUID()}`, { from: "127.0.0.34" });
  assert.equal(anonymous.status, 401, anonymous.text);

  const aliceReads = await burst(12, () => request("GET", `/accounts/${randomUUID()}`, { from: "127.0.0.31", headers: as(alice) }));
  assert.ok(count(aliceReads, 429) >= 3, `alice: ${statuses(aliceReads)}`);
  for (const a of aliceReads.filter((x) => x.status === 429)) {
    assertLimited(a, "reads", 1);
    assert.match(a.json.error, /API key/);
  }
  assert.ok(count(aliceReads, 404) >= 1, `alice's key was not accepted: ${statuses(aliceReads)}`);
  const bobRead = await request("GET", `/accounts/${randomUUID()}`, { from: "127.0.0.31", headers: as(bob) });
  assert.equal(bobRead.status, 404, `bob, from alice's address: ${bobRead.status} ${bobRead.text}`);

  // A new made-up key with every request: each key's zone is fresh, the address's (4 x the
  // rate, 4 x the burst) is not.
  const sprayed = await burst(60, () =>
    request("GET", `/accounts/${randomUUID()}`, { from: "127.0.0.32", headers: as(randomUUID()) }));
  assert.ok(count(sprayed, 429) >= 30, `60 requests with 60 keys at once: ${count(sprayed, 429)} got 429`);
  assert.equal(count(sprayed, 401) + count(sprayed, 429), 60, `made-up keys: ${statuses(sprayed)}`);
  for (const a of sprayed.filter((x) => x.status === 429)) assert.equal(a.headers["retry-after"], "1");
  const bystander = await request("GET", `/accounts/${randomUUID()}`, { from: "127.0.0.33", headers: as(bob) });
  assert.equal(bystander.status, 404, `another address with bob's key: ${bystander.status} ${bystander.text}`);
});

test("back to no settings: the HTTPS port closes and every Host is served again", async () => {
  await reconfigure({}, async () => (await request("GET", "/ping", { tls: { rejectUnauthorized: false } })).status === 0, { restart: true });
  const answer = await request("POST", "/transactions", { headers: { host: "evil.invalid" }, body: deposit() });
  assert.equal(answer.status, 201, answer.text);
});
