// What the edge tests share: their stack (scripts/test-edge.sh starts it), reconfiguring its
// nginx, and HTTP(S) requests from a chosen loopback address (all of 127.0.0.0/8 reaches the
// proxy's 127.0.0.1, so each case's clients are addresses of their own).

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import { DEFAULTS, ROOT } from "../lib/defaults.mjs";

export const PROXY_PORT = Number(process.env.PROXY_PORT || DEFAULTS.EDGE_TEST_PROXY_PORT);
export const TLS_PORT = Number(process.env.TLS_PORT || DEFAULTS.EDGE_TEST_TLS_PORT);
const STATE = process.env.STACK_STATE_DIR || path.join(ROOT, ".stack/edge-test");

/** Every edge setting, unset: the baseline each case adds its own settings to. */
const EDGE_SETTINGS = [
  "RATE_LIMIT_RPS", "RATE_LIMIT_BURST", "RATE_LIMIT_LIST_PER_MINUTE", "RATE_LIMIT_CONN",
  "API_KEYS_FILE", "TRUSTED_PROXIES", "ALLOWED_HOSTS", "TLS_CERT", "TLS_KEY",
];

/** Workers of the stack's nginx that still run an earlier configuration (after a reload). */
function oldWorkers() {
  const master = readFileSync(path.join(STATE, "nginx/nginx.pid"), "utf8").trim();
  const out = execFileSync("ps", ["--ppid", master, "-o", "args="], { encoding: "utf8" });
  return out.split("\n").filter((line) => line.includes("shutting down")).length;
}

/**
 * Runs `scripts/launcher.sh up` with these edge settings (nginx's edge/ is regenerated and nginx
 * reloaded; the services keep running as they are, unless `restart`), then waits until the workers of the old
 * configuration have exited (with reuseport each had a listening socket of its own, which could
 * still take a new connection) and `ready` holds five times in a row.
 */
export async function reconfigure(settings, ready, { restart = false } = {}) {
  const env = { ...process.env };
  for (const name of EDGE_SETTINGS) delete env[name];
  Object.assign(env, settings);
  // With restart, the services start again too, with these settings (API_KEYS_FILE is theirs).
  if (restart) execFileSync("bash", ["scripts/launcher.sh", "down"], { cwd: ROOT, env, stdio: ["ignore", "ignore", "inherit"] });
  execFileSync("bash", ["scripts/launcher.sh", "up"], { cwd: ROOT, env, stdio: ["ignore", "ignore", "inherit"] });
  const deadline = Date.now() + 20_000;
  for (let inARow = 0; inARow < 5; ) {
    inARow = oldWorkers() === 0 && (await ready()) ? inARow + 1 : 0;
    if (Date.now() > deadline) throw new Error(`nginx did not take ${JSON.stringify(settings)} within 20 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * One request to the proxy: { status, headers, text, json }, or { status: 0, error } when the
 * connection fails. `from` is the client's source address (127.0.0.1 unless given); `tls` is
 * https.request's options (ca, ...) for the HTTPS port.
 */
export function request(method, path, { from = "127.0.0.1", headers = {}, body, tls } = {}) {
  return new Promise((resolve) => {
    const lib = tls ? https : http;
    const req = lib.request(
      {
        host: "127.0.0.1",
        port: tls ? TLS_PORT : PROXY_PORT,
        method,
        path,
        localAddress: from,
        agent: false,
        headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
        timeout: 10_000,
        ...(tls ?? {}),
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (text += chunk));
        res.on("end", () => {
          let json;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (error) => resolve({ status: 0, error }));
    req.end(body);
  });
}

/** `n` requests at once; their answers. */
export const burst = (n, make) => Promise.all(Array.from({ length: n }, (_, i) => make(i)));

export const statuses = (answers) => answers.map((a) => a.status);
