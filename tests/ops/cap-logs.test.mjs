// scripts/lib/cap-logs.sh, the native stack's bound on its log files, run for real on files of
// its own: a log over LOG_MAX_BYTES is copied to NAME.log.1 and truncated in place, and a writer
// that appends (as the services and nginx do, O_APPEND) goes on at the new end of the file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ROOT } from "../lib/defaults.mjs";

test("a log over LOG_MAX_BYTES is cut, its previous content kept once in NAME.log.1", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cap-logs-"));
  const log = path.join(dir, "service.log");
  const capper = spawn("bash", [path.join(ROOT, "scripts/lib/cap-logs.sh"), dir], {
    env: { ...process.env, LOG_MAX_BYTES: "10000", LOG_CHECK_SECONDS: "1" },
    stdio: "ignore",
  });
  // An appending writer that stays open, as a service's stdout does.
  const fd = fs.openSync(log, "a");
  try {
    const line = "x".repeat(99) + "\n";
    for (let second = 0; second < 4; second += 1) {
      for (let i = 0; i < 100; i += 1) fs.writeSync(fd, line); // 10,000 bytes a second
      await sleep(1000);
    }
    fs.writeSync(fd, "the last line\n");
    const size = fs.statSync(log).size;
    const previous = fs.statSync(`${log}.1`).size;
    // Written 40,000 bytes; the file holds at most the cap plus one interval's writes.
    assert.ok(size <= 20_000 + 14, `service.log is ${size} bytes`);
    assert.ok(previous > 10_000 && previous <= 20_000, `service.log.1 is ${previous} bytes`);
    // The writer went on at the start of the truncated file: no hole of zeros before its line.
    const text = fs.readFileSync(log, "latin1");
    assert.ok(text.endsWith("the last line\n"));
    assert.ok(!text.includes("\0"), "the file has a hole of zero bytes");
  } finally {
    fs.closeSync(fd);
    capper.kill("SIGTERM");
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
