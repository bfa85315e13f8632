#!/usr/bin/env python3
"""CPU time by component during a phase, from /proc: where the machine's cores went.

    cpu_meter.py run OUT.json -- COMMAND [ARGS...]

Runs COMMAND (the load generator) and, every half second while it runs, reads utime+stime of
every process. The result covers the window from just after COMMAND started to the last
reading taken while it was still running, so processes that live only as long as the load
(wrk, pgbench and pgbench's PostgreSQL backends) are counted before they exit. Components:

  nginx, writer, reader, redis, postgres
             the processes named in BENCH_PIDS ("PID:component,..."; bench/run.sh passes the
             stack's writer, reader, nginx master, Redis and postmaster) and their children
             (nginx workers, PostgreSQL backends); of the backends, only those of the databases
             in BENCH_PG_DATABASES (default: transactions,bench_limit,bench_big)
  wrk, pgbench   by process name
  other      everything else: on a shared machine, other people's builds, tests and stacks
             (their nginx, writer or PostgreSQL count here, not as ours)

Also, for our components, the time their threads were runnable but waiting for a CPU
(/proc/PID/task/TID/schedstat). Resolution: one clock tick (10 ms) for CPU time. Writes
{"window_s", "cpu_seconds": {component: s}, "run_queue_wait_seconds": {component: s},
"machine_cpu_seconds" (all cores, idle included), "machine_busy_fraction",
"machine_busy_cpu_seconds", "machine_steal_seconds"}; exits with COMMAND's status.
"""
import json
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
BY_NAME = {"wrk": "wrk", "pgbench": "pgbench"}
OURS = dict(item.split(":", 1) for item in os.environ.get("BENCH_PIDS", "").split(",")
            if ":" in item)
DATABASES = set(filter(None, os.environ.get(
    "BENCH_PG_DATABASES", "transactions,bench_limit,bench_big").split(",")))
INTERVAL = 0.5


def component_of(pid, comm, ppid):
    component = OURS.get(pid) or OURS.get(ppid)
    if component == "postgres" and pid not in OURS:
        return postgres_component(pid)
    return component or BY_NAME.get(comm, "other")


def postgres_component(pid):
    """Backends are titled "postgres: USER DATABASE HOST STATE"; background processes
    "postgres: NAME" (checkpointer, walwriter, ...) or just the postmaster's command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            title = handle.read().replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        return "postgres"
    if len(title) >= 4 and title[0] == "postgres:" and "(" in title[3]:
        return "postgres" if title[2] in DATABASES else "other"
    return "postgres"


def run_queue_wait(pid):
    """Nanoseconds the process's threads have spent runnable but waiting for a CPU."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total


def snapshot(known):
    processes = {}
    waits = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                raw = stat.read()
        except OSError:
            continue
        # comm is in parentheses and may contain spaces; the fields after it are fixed.
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        ticks, start = int(fields[11]) + int(fields[12]), int(fields[19])
        key = (entry, start)
        if key not in known:
            known[key] = component_of(entry, comm, fields[1])
        processes[key] = ticks
        if known[key] != "other":
            waits[key] = run_queue_wait(entry)
    with open("/proc/stat") as stat:
        cpu = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user/nice)
    return {"at": time.monotonic(), "processes": processes, "waits": waits,
            "total": sum(cpu[:8]), "idle": cpu[3] + cpu[4], "steal": cpu[7]}


def diff(first, last, known, exclude):
    seconds = {}
    for key, ticks in last["processes"].items():
        if key[0] in exclude:
            continue
        used = ticks - first["processes"].get(key, 0)
        if used > 0:
            component = known[key]
            seconds[component] = seconds.get(component, 0) + used / TICK
    waiting = {}
    for key, wait in last["waits"].items():
        if key[0] in exclude:
            continue
        waited = wait - first["waits"].get(key, 0)
        if waited > 0:
            waiting[known[key]] = waiting.get(known[key], 0) + waited / 1e9
    total = (last["total"] - first["total"]) / TICK
    idle = (last["idle"] - first["idle"]) / TICK
    steal = (last["steal"] - first["steal"]) / TICK
    return {
        "window_s": round(last["at"] - first["at"], 3),
        "cpu_seconds": {k: round(v, 3) for k, v in sorted(seconds.items())},
        # Time the components' threads were runnable but had no CPU (schedstat): on a busy
        # 2-core machine this is where latency comes from.
        "run_queue_wait_seconds": {k: round(v, 3) for k, v in sorted(waiting.items())},
        "machine_cpu_seconds": round(total, 2),
        "machine_busy_fraction": round(1 - idle / total, 3) if total else None,
        # All cores' non-idle time, whoever used it: the "whole machine" CPU per request. Steal
        # (the hypervisor running other guests) counts as busy here, so it is kept apart too.
        "machine_busy_cpu_seconds": round(total - idle, 3),
        "machine_steal_seconds": round(steal, 3),
    }


def main():
    if len(sys.argv) < 4 or sys.argv[1] != "run" or sys.argv[3] != "--":
        sys.exit(__doc__)
    out, command = sys.argv[2], sys.argv[4:]
    known = {}
    child = subprocess.Popen(command)
    time.sleep(0.2)  # let the load generator connect
    first = last = snapshot(known)
    while True:
        time.sleep(INTERVAL)
        if child.poll() is not None:
            break
        reading = snapshot(known)
        if child.poll() is not None:
            break  # it may have ended during the reading: keep the previous one
        last = reading
    result = diff(first, last, known, exclude={str(os.getpid())})
    with open(out, "w") as handle:
        json.dump(result, handle)
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
