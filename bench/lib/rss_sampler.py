#!/usr/bin/env python3
"""Samples VmRSS and VmHWM of processes until SIGTERM/SIGINT, then writes a JSON summary.

    rss_sampler.py OUT.json INTERVAL_MS name=pid [name=pid ...]

For each process: the values at the start, the highest VmRSS seen, the VmHWM at the end and the
highest VmHWM seen (the kernel's own peak since the process started, which also catches spikes
between samples; the kernel updates it lazily, so a later reading can be a little lower), and
the number of samples. Sizes in KiB, as /proc reports them.
"""
import json
import signal
import sys
import time


def read_status(pid):
    values = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    values[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return values


def main():
    out, interval = sys.argv[1], int(sys.argv[2]) / 1000
    pids = dict(arg.split("=", 1) for arg in sys.argv[3:])
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    result = {}
    for name, pid in pids.items():
        first = read_status(pid) or {}
        result[name] = {
            "pid": int(pid),
            "rss_start_kib": first.get("VmRSS"),
            "hwm_start_kib": first.get("VmHWM"),
            "rss_max_kib": first.get("VmRSS"),
            "hwm_end_kib": first.get("VmHWM"),
            "hwm_max_kib": first.get("VmHWM"),
            "samples": 1 if first else 0,
            "exited": not first,
        }
    started = time.monotonic()
    while not stopping:
        time.sleep(interval)
        for name, pid in pids.items():
            values = read_status(pid)
            entry = result[name]
            if values is None:
                entry["exited"] = True
                continue
            entry["samples"] += 1
            entry["rss_max_kib"] = max(entry["rss_max_kib"] or 0, values["VmRSS"])
            entry["hwm_end_kib"] = values["VmHWM"]
            entry["hwm_max_kib"] = max(entry["hwm_max_kib"] or 0, values["VmHWM"])
            entry["rss_end_kib"] = values["VmRSS"]
    for entry in result.values():
        entry["seconds"] = round(time.monotonic() - started, 3)
        entry["interval_ms"] = int(interval * 1000)
    with open(out, "w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
