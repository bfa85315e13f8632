// What both topology test files need: lookups in ha:status's components, and polling.

import { setTimeout as sleep } from 'node:timers/promises';

export const byName = (components, name) => components.find((c) => c.name === name);
export const withRole = (components, kind, role) => components.filter((c) => c.kind === kind && c.role === role);

/** Polls `check` until it returns a truthy value; returns [value, elapsed ms], or throws. */
export async function waitFor(what, timeoutMs, check, everyMs = 100) {
  const start = Date.now();
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return [value, Date.now() - start];
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}
