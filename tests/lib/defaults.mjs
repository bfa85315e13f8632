// The default ports and addresses, read from scripts/lib/defaults.sh (the one place they are
// written) as { NAME: value } without the DEFAULT_ prefix. Every Node test and helper that needs
// a default port takes it from here.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The NAME=value lines of scripts/lib/defaults.sh, without the DEFAULT_ prefix. */
export function readDefaults(file = path.join(ROOT, 'scripts', 'lib', 'defaults.sh')) {
  const defaults = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const match = /^DEFAULT_([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (match) defaults[match[1]] = match[2];
  }
  return defaults;
}
export const DEFAULTS = readDefaults();

/** http://127.0.0.1:<port>, the port being the variable `name` if set, else its default. */
export const localUrl = (name) => `http://127.0.0.1:${process.env[name] || DEFAULTS[name]}`;
