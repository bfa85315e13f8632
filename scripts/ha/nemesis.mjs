// The nemesis of the replicated topology on simulated hosts (HA_HOSTS=3; docs/ha.md,
// "Simulated hosts and partitions"): it acts on the running topology and prints what it did
// as one JSON object.
//
//   npm run ha:nemesis -- partition h1[,h2...]   cut these hosts off from every other host and
//                                                from the edge (nginx): packets both ways are
//                                                dropped, so connections hang rather than fail
//   npm run ha:nemesis -- heal                   remove every cut
//   npm run ha:nemesis -- pause <component|host> SIGSTOP the component (a name from ha:status,
//                                                with its child processes) or every process of a
//                                                host (h1: a frozen VM)
//   npm run ha:nemesis -- resume <component|host>   SIGCONT the same
//   npm run ha:nemesis -- kill <component>       SIGKILL it
//   npm run ha:nemesis -- netem <host> "<args>"  tc netem on the host's link ("clear" removes it)
//
// The cuts are iptables rules in a chain of its own (TMHA-NEMESIS) inside each cut host's
// namespace: nothing in the root namespace changes, and `ha:stop` deletes them with the
// namespaces. Works on the settings `ha:start` used (HA_* in the environment).
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { componentsStatus, hostsOf, loadSettings } from './status.mjs';

const run = promisify(execFile);
const CHAIN = 'TMHA-NEMESIS';

function fail(message) {
  console.error(`[ha-nemesis] error: ${message}`);
  process.exit(2);
}

const inNs = (ns, cmd, args) => run('ip', ['netns', 'exec', ns, cmd, ...args], { timeout: 10_000 });
const iptables = (ns, ...args) => inNs(ns, 'iptables', ['-w', '5', ...args]);

/** Host number from "h2" or "2". */
function hostNumber(hosts, word) {
  const n = Number(String(word).replace(/^h/, ''));
  if (!hosts.list.includes(n)) fail(`no host ${word} (hosts: ${hosts.list.map((h) => `h${h}`).join(', ')})`);
  return n;
}

async function ensureChain(ns) {
  await iptables(ns, '-N', CHAIN).catch(() => {}); // exists already
  for (const hook of ['INPUT', 'OUTPUT']) {
    await iptables(ns, '-C', hook, '-j', CHAIN).catch(() => iptables(ns, '-I', hook, '1', '-j', CHAIN));
  }
}

export async function partition(settings, words) {
  const hosts = hostsOf(settings);
  const cut = [...new Set(words.split(',').map((w) => hostNumber(hosts, w)))];
  const others = hosts.list.filter((h) => !cut.includes(h));
  if (others.length === 0) fail('a partition needs hosts on both sides');
  // The edge (nginx, the clients' way in) stays on the side of the hosts not listed.
  const away = [...others.map((h) => hosts.addr(h)), `${settings.HA_NET_PREFIX}.0.100`];
  for (const h of cut) {
    const ns = hosts.ns(h);
    await ensureChain(ns);
    for (const addr of away) {
      await iptables(ns, '-A', CHAIN, '-s', addr, '-j', 'DROP');
      await iptables(ns, '-A', CHAIN, '-d', addr, '-j', 'DROP');
    }
  }
  return { action: 'partition', cut: cut.map(hosts.ns), from: [...others.map(hosts.ns), hosts.edgeNs], dropped: away };
}

export async function heal(settings) {
  const hosts = hostsOf(settings);
  const healed = [];
  for (const h of hosts.list) {
    const ns = hosts.ns(h);
    const { stdout } = await iptables(ns, '-S', CHAIN).catch(() => ({ stdout: '' }));
    const rules = stdout.split('\n').filter((l) => l.startsWith('-A')).length;
    if (rules > 0) {
      await iptables(ns, '-F', CHAIN);
      healed.push({ host: ns, rulesRemoved: rules });
    }
  }
  return { action: 'heal', healed };
}

/** The pid and every descendant of it (from /proc). */
function withDescendants(pid) {
  const children = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  const all = [];
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift();
    all.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  return all;
}

/** The pids a target names: a host's every process, or a component with its children. */
async function targetPids(settings, target) {
  const hosts = hostsOf(settings);
  if (/^h\d+$/.test(target)) {
    const ns = hosts.ns(hostNumber(hosts, target));
    const { stdout } = await run('ip', ['netns', 'pids', ns]);
    return { target: ns, pids: stdout.split('\n').filter(Boolean).map(Number) };
  }
  const { components } = await componentsStatus(settings);
  const c = components.find((x) => x.name === target);
  if (!c) fail(`no component ${target} (ha:status names them: ${components.map((x) => x.name).join(', ')})`);
  if (!c.pid) fail(`${target} has no running process now`);
  return { target, host: c.host, pids: withDescendants(c.pid) };
}

export async function signal(settings, action, target) {
  const sig = { pause: 'SIGSTOP', resume: 'SIGCONT', kill: 'SIGKILL' }[action];
  const found = await targetPids(settings, target);
  const pids = action === 'kill' ? found.pids.slice(0, 1) : found.pids;
  const signalled = [];
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
      signalled.push(pid);
    } catch {
      // exited meanwhile
    }
  }
  return { action, signal: sig, ...found, pids: signalled };
}

export async function netem(settings, word, args) {
  const hosts = hostsOf(settings);
  const ns = hosts.ns(hostNumber(hosts, word));
  if (!args || args === 'clear') {
    await inNs(ns, 'tc', ['qdisc', 'del', 'dev', 'eth0', 'root']).catch(() => {});
    return { action: 'netem', host: ns, netem: null };
  }
  await inNs(ns, 'tc', ['qdisc', 'replace', 'dev', 'eth0', 'root', 'netem', ...args.split(/\s+/)]);
  return { action: 'netem', host: ns, netem: args };
}

export async function nemesis(settings, [action, target, extra]) {
  if (!(Number(settings.HA_HOSTS) > 0)) fail('the nemesis acts on simulated hosts: start the topology with HA_HOSTS=3');
  const started = new Date().toISOString();
  let done;
  switch (action) {
    case 'partition': done = await partition(settings, target ?? fail('partition <host>[,<host>...]')); break;
    case 'heal': done = await heal(settings); break;
    case 'pause': case 'resume': case 'kill': done = await signal(settings, action, target ?? fail(`${action} <component|host>`)); break;
    case 'netem': done = await netem(settings, target ?? fail('netem <host> "<args>"'), extra); break;
    default: fail('usage: nemesis partition <host>[,<host>...] | heal | pause <component|host> | resume <component|host> | kill <component> | netem <host> "<args>"|clear');
  }
  return { at: started, ...done };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(JSON.stringify(await nemesis(await loadSettings(), process.argv.slice(2))));
}
