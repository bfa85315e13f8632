// Seeds the stack for the read phases: one POST /transactions (amount 1) per account of the
// pool, so every account exists, and writes the transaction ids it got back, so the
// transaction-read phases only ask for ids that exist.
//
//   node seed.mjs BASE_URL ACCOUNTS_FILE TX_IDS_OUT CONCURRENCY
//
// Exits non-zero on any answer other than 201 (the benchmark allows no errors).
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";

const [base, accountsFile, idsOut, concurrencyArg] = process.argv.slice(2);
const url = new URL(base);
if (url.hostname !== "127.0.0.1") throw new Error(`load goes to 127.0.0.1 only, not ${url.hostname}`);
const accounts = readFileSync(accountsFile, "utf8").split("\n").filter(Boolean);
const concurrency = Number(concurrencyArg) || 32;
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });

function post(accountId) {
  const body = JSON.stringify({ account_id: accountId, amount: 1 });
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: url.hostname,
        port: url.port || 80,
        path: "/transactions",
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk) => (text += chunk));
        response.on("end", () => {
          if (response.statusCode !== 201) {
            reject(new Error(`POST /transactions for ${accountId}: ${response.statusCode} ${text}`));
          } else {
            resolve(JSON.parse(text).transaction_id);
          }
        });
      },
    );
    request.on("error", reject);
    request.end(body);
  });
}

const started = performance.now();
const ids = new Array(accounts.length);
let next = 0;
async function worker() {
  while (next < accounts.length) {
    const index = next++;
    ids[index] = await post(accounts[index]);
  }
}
try {
  await Promise.all(Array.from({ length: concurrency }, worker));
} catch (error) {
  console.error(`[bench] seeding failed: ${error.message}`);
  process.exit(1);
}
agent.destroy();
writeFileSync(idsOut, ids.join("\n") + "\n");
const seconds = (performance.now() - started) / 1000;
console.log(`[bench] seeded ${accounts.length} accounts in ${seconds.toFixed(1)} s (${Math.round(accounts.length / seconds)} POST/s)`);
