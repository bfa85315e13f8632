"""The benchmark's report (bench.py report TMP_DIR RESULTS_DIR): the phase table, CPU per
request, ratios against the limits, service memory, the 1M-row list, the targets, and
latest.json / latency.png. Only the chart needs matplotlib.

BENCH_REPORT_NAME (default "latest") names the JSON written to RESULTS_DIR: run.sh sets it to
run-N for each run when BENCH_RUNS > 1 (runs.py then writes the summary and latest.json)."""

import glob
import json
import os
import platform
import subprocess
import sys
import time

from report_big import load_big, print_big
from report_util import error_count, fmt, load_json, machine_cpu_us, mib, peak_under_load
from targets import TARGETS, evaluate_targets, last_line, last_line_fields, print_targets


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release()}


def git_commit(root):
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def load_phases(tmp, results_dir):
    """The phases of this run (meta, wrk/pgbench result and CPU merged), the RSS samples, and,
    when only the big list ran (BENCH_BIG_LIST=only), the previous full run they came from."""
    phases = []
    for meta_path in sorted(glob.glob(os.path.join(tmp, "phases", "*.meta.json"))):
        meta = load_json(meta_path)
        result = load_json(meta_path.replace(".meta.json", ".json"))
        phase = dict(meta)
        if result is None:
            phase.update({"requests": 0, "rps": None, "latency_ms": {}, "missing": True,
                          "errors": {"no_result": 1}})
        else:
            phase.update(result)
        cpu = load_json(meta_path.replace(".meta.json", ".cpu.json"))
        if cpu:
            phase["cpu"] = cpu
        phases.append(phase)
    rss = load_json(os.path.join(tmp, "rss.json"), {})
    previous = None
    if not phases:
        # BENCH_BIG_LIST=only: keep the main phases of the last full run, replace the big list.
        previous = load_json(os.path.join(results_dir, "latest.json"))
        if previous:
            phases, rss = previous.get("phases", []), previous.get("rss", {})
            print(f"(main phases from the previous run, {previous.get('generated_at')}; only the "
                  "big-list phase was run now)")
    return phases, rss, previous


def rps_of(by_name, name):
    phase = by_name.get(name)
    return phase.get("rps") if phase else None


def compute_ratios(by_name):
    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None

    def cpu_ratio(stack, limit):
        a, b = by_name.get(stack), by_name.get(limit)
        if not a or not b:
            return None
        return ratio(cpu_per_request(b), cpu_per_request(a))

    def rps(name):
        return rps_of(by_name, name)

    return {
        "write_ratio": ratio(rps("stack_write"), rps("limit_write")),
        # What the ratios would be if throughput were set by CPU alone and the benchmark had the
        # machine to itself: CPU per request along the limit's path / along the stack's path.
        "write_ratio_cpu": cpu_ratio("stack_write", "limit_write"),
        "read_ratio_cpu": cpu_ratio("stack_account_read", "limit_read"),
        "read_ratio": ratio(rps("stack_account_read"), rps("limit_read")),
        "transaction_read_ratio": ratio(rps("stack_transaction_read"), rps("limit_read")),
        "mix_vs_read_limit": ratio(rps("stack_mix"), rps("limit_read")),
        # A refused row must cost its batch little: writes with a share refused / none refused.
        "refused_vs_clean": ratio(rps("refused_write"), rps("clean_write")),
    }


def print_phases(env, phases):
    print()
    print(f"Benchmark ({env.get('BENCH_DURATION_S', '?')} s per phase, {env.get('BENCH_THREADS', '?')}"
          f" load threads, write concurrency {env.get('BENCH_WRITE_CONNECTIONS', '?')}, read "
          f"concurrency {env.get('BENCH_READ_CONNECTIONS', '?')}; latencies in ms)")
    header = (f"{'phase':<44} {'conns':>5} {'rate cap':>8} {'req/s':>9} {'p50':>7} {'p99':>7} "
              f"{'p99.9':>7} {'errors':>6}")
    print(header)
    print("-" * len(header))
    for phase in phases:
        latency = phase.get("latency_ms") or {}
        errors = error_count(phase.get("errors"))
        print(f"{phase['label']:<44} {phase.get('connections', '-'):>5} "
              f"{fmt(phase.get('rate_target'), 0):>8} {fmt(phase.get('rps'), 0):>9} "
              f"{fmt(latency.get('p50')):>7} {fmt(latency.get('p99')):>7} "
              f"{fmt(latency.get('p999')):>7} {errors:>6}")
    print("-" * len(header))


def print_ratios(ratios):
    print(f"write_ratio  POST /transactions / pgbench same SQL      = {fmt(ratios['write_ratio'])}"
          f"  (target >= {TARGETS['write_ratio']})")
    print(f"read_ratio   GET /accounts/{{id}} / GET /ping via nginx    = {fmt(ratios['read_ratio'])}"
          f"  (target >= {TARGETS['read_ratio']:.2f})")
    print(f"             GET /transactions/{{id}} / GET /ping          = "
          f"{fmt(ratios['transaction_read_ratio'])}")
    if ratios.get("refused_vs_clean") is not None:
        print(f"refused      POST with refused rows / none refused      = "
              f"{fmt(ratios['refused_vs_clean'])}  (target >= {TARGETS['refused_vs_clean']})")
    if ratios["write_ratio_cpu"] or ratios["read_ratio_cpu"]:
        print(f"CPU-bound estimates (CPU us per request along the limit's path / the stack's path; "
              f"less sensitive to other load on the machine): write {fmt(ratios['write_ratio_cpu'])}, "
              f"read {fmt(ratios['read_ratio_cpu'])}")


def print_rss(rss):
    if not rss:
        return
    print()
    print("Service memory (MiB): VmRSS at the start of the run, the highest VmRSS sampled "
          f"(every {next(iter(rss.values())).get('interval_ms', '?')} ms), and VmHWM (the "
          "kernel's peak since the process started) at the start and the highest seen")
    for name, entry in rss.items():
        print(f"  {name:<7} pid {entry.get('pid')}: RSS at start {fmt(mib(entry.get('rss_start_kib')), 1)}, "
              f"highest sampled {fmt(mib(entry.get('rss_max_kib')), 1)}, peak under load "
              f"{fmt(mib(peak_under_load(entry)), 1)}; "
              f"VmHWM at start {fmt(mib(entry.get('hwm_start_kib')), 1)}, highest "
              f"{fmt(mib(entry.get('hwm_max_kib') or entry.get('hwm_end_kib')), 1)}"
              f"{'  (EXITED during the run: the stack was restarted, figures are suspect)' if entry.get('exited') else ''}")


def run_settings(env, previous):
    """The settings a run was made with (those of the previous run when only the list ran)."""
    return (previous or {}).get("settings") or {
        "duration_s": int(env.get("BENCH_DURATION_S", "0")),
        "threads": int(env.get("BENCH_THREADS", "0")),
        "write_connections": int(env.get("BENCH_WRITE_CONNECTIONS", "0")),
        "read_connections": int(env.get("BENCH_READ_CONNECTIONS", "0")),
        "half_load_fraction": float(env.get("BENCH_HALF", "0.5")),
        "accounts": int(env.get("BENCH_ACCOUNTS_N", "10000")),
        "url": env.get("BENCH_URL"),
    }


def build_document(env, previous, phases, ratios, rss, big, targets, failures, line):
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "main_phases_generated_at": (previous or {}).get("generated_at"),
        "commit": git_commit(env.get("BENCH_ROOT", ".")),
        "machine": machine(),
        "load_average_at_start": env.get("BENCH_LOADAVG"),
        "settings": run_settings(env, previous),
        "phases": phases,
        "ratios": ratios,
        "rss": rss,
        "big_list": big,
        "targets": targets,
        "errors": failures,
        "last_line": line,
    }


def cmd_report(tmp, results_dir):
    env = os.environ
    phases, rss, previous = load_phases(tmp, results_dir)
    by_name = {phase["name"]: phase for phase in phases}
    ratios = compute_ratios(by_name)
    big = load_big(tmp)

    print_phases(env, phases)
    print_cpu(phases)
    print_ratios(ratios)
    print_rss(rss)
    if big:
        print()
        print_big(big)
    targets = evaluate_targets(ratios, by_name, phases, rss, big)
    print_targets(targets)

    failures = [p["name"] for p in phases if error_count(p.get("errors"))]
    if big:
        failures += [f"big_list:{name}" for name, bad in big.get("failures", {}).items() if bad]
    fields = last_line_fields(ratios, by_name)
    line = last_line(fields)
    document = build_document(env, previous, phases, ratios, rss, big, targets, failures, line)
    document["last_line_fields"] = fields
    if previous and previous.get("runs"):
        document["runs"] = previous["runs"]  # BENCH_BIG_LIST=only: the main phases' runs summary
    os.makedirs(results_dir, exist_ok=True)
    json_path = os.path.join(results_dir, env.get("BENCH_REPORT_NAME", "latest") + ".json")
    with open(json_path, "w") as handle:
        json.dump(document, handle, indent=1)
        handle.write("\n")
    chart(by_name, os.path.join(results_dir, "latency.png"), document)

    print()
    print(f"Results: {json_path}, {os.path.join(results_dir, 'latency.png')}")
    if failures:
        print(f"FAILED: errors (non-2xx or socket errors) in: {', '.join(failures)}")
    print(line)
    return 1 if failures else 0


CPU_COLUMNS = ["wrk", "pgbench", "nginx", "reader", "writer", "redis", "postgres"]
# The processes a request of each phase goes through (the others' CPU during a phase is not
# the phase's: e.g. other people's tests hitting PostgreSQL during GET /ping).
PATH_OF = {
    "limit_write": ["pgbench", "postgres"],
    "limit_read": ["wrk", "nginx", "reader"],
    "half_limit_write": ["pgbench", "postgres"],
    "half_ping": ["wrk", "nginx", "reader"],
    "stack_write": ["wrk", "nginx", "writer", "redis", "postgres"],
    "stack_account_read": ["wrk", "nginx", "reader", "redis"],
    "stack_transaction_read": ["wrk", "nginx", "reader", "redis"],
}


def cpu_per_request(phase, components=None):
    """CPU microseconds one request costs in `components` (default: along its path)."""
    cpu, rps = phase.get("cpu"), phase.get("rps")
    components = components or PATH_OF.get(phase["name"])
    if not cpu or not rps or not cpu.get("window_s") or not components:
        return None
    used = sum(cpu["cpu_seconds"].get(component, 0) for component in components)
    return used / cpu["window_s"] / rps * 1e6


def print_cpu(phases):
    """CPU microseconds per request by process, and how busy the machine was (including work
    that is not ours: on a shared machine that is what makes throughput figures noisy)."""
    if not any(phase.get("cpu") for phase in phases):
        return
    print("CPU per request (us, /proc utime+stime)      " +
          " ".join(f"{c:>8}" for c in CPU_COLUMNS) +
          f" {'others':>8} {'busy':>6} {'machine':>8} {'rq wait':>8}")
    for phase in phases:
        cpu = phase.get("cpu")
        if not cpu or not phase.get("rps") or not cpu.get("window_s"):
            continue
        cells = []
        for column in CPU_COLUMNS:
            value = cpu_per_request(phase, [column])
            cells.append(f"{value:>8.0f}" if value else f"{'-':>8}")
        total = cpu["machine_cpu_seconds"]
        others = cpu["cpu_seconds"].get("other", 0) / total if total else 0
        busy = cpu.get("machine_busy_fraction") or 0
        waits = cpu.get("run_queue_wait_seconds") or {}
        wait = sum(waits.values()) / cpu["window_s"] / phase["rps"] * 1e6 if waits else None
        print(f"{phase['label']:<45}" + " ".join(cells) + f" {others:>7.0%} {busy:>6.0%} "
              f"{fmt(machine_cpu_us(phase), 0):>8} {fmt(wait, 0) if wait is not None else '-':>8}")
    print("  (others: share of the machine's CPU used by processes that are not part of the "
          "benchmark, e.g. other people's builds and tests; busy: share of all cores in use;\n"
          "   machine: all cores' busy CPU per request, whoever used it (issue 14's CPU targets);\n"
          "   rq wait: time per request the benchmark's and the stack's threads were runnable "
          "but waiting for a CPU, summed over them)")
    print("-" * 100)


def chart(by_name, path, document):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[bench] matplotlib is not available: no chart", file=sys.stderr)
        return
    series = [
        ("stack_account_read", "GET /accounts/{id}, peak", "#1f77b4", None),
        ("half_account_read", "GET /accounts/{id}, half load", "#aec7e8", None),
        ("stack_write", "POST /transactions, peak", "#d62728", None),
        ("half_write", "POST /transactions, half load", "#ff9896", None),
        ("limit_read", "limit: GET /ping via nginx", "#7f7f7f", "//"),
        ("half_ping", "limit: GET /ping, half load", "#c7c7c7", "//"),
        ("limit_write", "limit: pgbench, same SQL", "#bcbd22", "//"),
        ("half_limit_write", "limit: pgbench, half load", "#dbdb8d", "//"),
    ]
    series = [s for s in series if s[0] in by_name and by_name[s[0]].get("latency_ms")]
    percentiles = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")]
    fig, ax = plt.subplots(figsize=(12, 4.8), dpi=100)
    width = 0.8 / max(1, len(series))
    for index, (name, label, color, hatch) in enumerate(series):
        latency = by_name[name]["latency_ms"]
        values = [latency.get(key) or 0 for key, _ in percentiles]
        rps = by_name[name].get("rps")
        positions = [x + (index - (len(series) - 1) / 2) * width for x in range(len(percentiles))]
        bars = ax.bar(positions, values, width, label=f"{label} ({rps:,.0f}/s)" if rps else label,
                      color=color, hatch=hatch, edgecolor="white" if not hatch else "#333333",
                      linewidth=0.5)
        ax.bar_label(bars, labels=[f"{v:.1f}" if v < 100 else f"{v:.0f}" for v in values],
                     fontsize=7, padding=1)
    # The tail targets: p99 at half load at most 2 x the limit's p99 at the same rate.
    for limit, color, what in (("half_ping", "#1f77b4", "read"), ("half_limit_write", "#d62728", "write")):
        p99 = (by_name.get(limit, {}).get("latency_ms") or {}).get("p99")
        if p99:
            line = TARGETS["half_p99_vs_limit"] * p99
            ax.axhline(line, color=color, linestyle="--", linewidth=0.8,
                       label=f"target: {what} p99 at half load <= {line:.1f} ms (2 x the limit's)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(percentiles)), [label for _, label in percentiles])
    ax.set_ylabel("latency (ms, log scale)")
    settings = document["settings"]
    ax.set_title(f"Latency percentiles, read vs write — {document['machine']['cores']} cores, "
                 f"{settings['duration_s']} s/phase, {settings['read_connections']} read / "
                 f"{settings['write_connections']} write connections", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

