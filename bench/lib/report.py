"""The benchmark's report (bench.py report TMP_DIR RESULTS_DIR): the phase table, CPU per
request, ratios against the limits, service memory, the 1M-row list, the targets, and
latest.json / latency.png. Only the chart needs matplotlib."""

import glob
import json
import os
import platform
import subprocess
import sys
import time

TARGETS = {
    "write_ratio": 0.70,
    "read_ratio": 0.75,
    "half_read_p99_ms": 5.0,
    "half_write_p99_ms": 15.0,
    "rss_mib": 40.0,
    "list_tx_per_s": 300_000,
    "list_rss_growth_mib": 20.0,
    "account_cost_spread": 0.10,
}


def load_json(path, default=None):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError):
        return default


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


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float) and digits == 0:
        return f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def error_count(errors):
    return sum(v for v in (errors or {}).values() if isinstance(v, (int, float)))


def mib(kib):
    return None if kib is None else round(kib / 1024, 1)


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
          f"  (target >= {TARGETS['read_ratio']})")
    print(f"             GET /transactions/{{id}} / GET /ping          = "
          f"{fmt(ratios['transaction_read_ratio'])}")
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


def print_targets(targets):
    print()
    print("Targets (issue 6):")
    for target in targets:
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[target["pass"]]
        print(f"  {verdict}  {target['name']:<46} measured {fmt(target['measured'])}  "
              f"target {target['op']} {target['target']}")


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
    targets = evaluate_targets(ratios, by_name, rss, big)
    print_targets(targets)

    failures = [p["name"] for p in phases if error_count(p.get("errors"))]
    if big:
        failures += [f"big_list:{name}" for name, bad in big.get("failures", {}).items() if bad]
    read_rps = rps_of(by_name, "stack_account_read")
    write_rps = rps_of(by_name, "stack_write")
    last_line = (f"write_ratio={fmt(ratios['write_ratio'])} read_ratio={fmt(ratios['read_ratio'])} "
                 f"write_rps={round(write_rps) if write_rps else 0} "
                 f"read_rps={round(read_rps) if read_rps else 0}")

    document = {
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
        "last_line": last_line,
    }
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, "latest.json"), "w") as handle:
        json.dump(document, handle, indent=1)
        handle.write("\n")
    chart(by_name, os.path.join(results_dir, "latency.png"), document)

    print()
    print(f"Results: {os.path.join(results_dir, 'latest.json')}, "
          f"{os.path.join(results_dir, 'latency.png')}")
    if failures:
        print(f"FAILED: errors (non-2xx or socket errors) in: {', '.join(failures)}")
    print(last_line)
    return 1 if failures else 0


CPU_COLUMNS = ["wrk", "pgbench", "nginx", "reader", "writer", "redis", "postgres"]
# The processes a request of each phase goes through (the others' CPU during a phase is not
# the phase's: e.g. other people's tests hitting PostgreSQL during GET /ping).
PATH_OF = {
    "limit_write": ["pgbench", "postgres"],
    "limit_read": ["wrk", "nginx", "reader"],
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
          " ".join(f"{c:>8}" for c in CPU_COLUMNS) + f" {'others':>8} {'busy':>6} {'rq wait':>8}")
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
              f"{fmt(wait, 0) if wait is not None else '-':>8}")
    print("  (others: share of the machine's CPU used by processes that are not part of the "
          "benchmark, e.g. other people's builds and tests; busy: share of all cores in use;\n"
          "   rq wait: time per request the benchmark's and the stack's threads were runnable "
          "but waiting for a CPU, summed over them)")
    print("-" * 100)


def load_curl(path):
    """curl's -w JSON (the last line starting with "{") and any error lines before it."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return None, []
    data, errors = None, []
    for line in lines:
        if line.startswith("{"):
            try:
                data = json.loads(line)
                continue
            except json.JSONDecodeError:
                pass
        if line.strip():
            errors.append(line.strip())
    return data, errors


def load_big(tmp):
    big_dir = os.path.join(tmp, "big")
    if not os.path.isdir(big_dir):
        return None
    big = {"rows": int(os.environ.get("BENCH_BIG_ROWS", "0")), "streams": [], "failures": {}}
    big["load"] = load_json(os.path.join(big_dir, "load.json"), {})
    for index in (1, 2):
        curl, curl_errors = load_curl(os.path.join(big_dir, f"stream-{index}.curl.json"))
        count = load_json(os.path.join(big_dir, f"stream-{index}.count.json"))
        rss = load_json(os.path.join(big_dir, f"stream-{index}.rss.json"), {}).get("reader", {})
        if not curl or not count:
            continue
        seconds = curl["total_s"]
        growth = None
        if rss.get("rss_max_kib") is not None and rss.get("rss_start_kib") is not None:
            growth = mib(rss["rss_max_kib"] - rss["rss_start_kib"])
        ok = curl["http_code"] == 200 and count["complete"] and count["objects"] == big["rows"]
        big["failures"][f"stream_{index}"] = not ok
        big["streams"].append({
            "run": index,
            "curl_errors": curl_errors,
            "http_code": curl["http_code"],
            "transactions": count["objects"],
            "complete": count["complete"],
            "bytes": curl["size"],
            "seconds": seconds,
            "ttfb_s": curl["ttfb_s"],
            "tx_per_s": round(count["objects"] / seconds) if seconds else None,
            "mib_per_s": round(curl["size"] / seconds / 1048576, 1) if seconds else None,
            "rss_start_mib": mib(rss.get("rss_start_kib")),
            "rss_max_mib": mib(rss.get("rss_max_kib")),
            "rss_growth_mib": growth,
            "hwm_end_mib": mib(rss.get("hwm_end_kib")),
            "rss_samples": rss.get("samples"),
        })
    accounts = {}
    for kind in ("single", "big"):
        meta = load_json(os.path.join(big_dir, f"account-{kind}.meta.json"), {})
        paths = sorted(path for path in glob.glob(os.path.join(big_dir, f"account-{kind}-*.json"))
                       if not path.endswith(".cpu.json"))
        rounds = [r for r in map(load_json, paths) if r]
        if not rounds:
            continue
        requests = sum(r["requests"] for r in rounds)
        seconds = sum(r["duration_s"] for r in rounds)
        errors = {}
        for r in rounds:
            for key, value in r["errors"].items():
                errors[key] = errors.get(key, 0) + value
        # The cost of a read: CPU per request in the scratch reader and Redis, per round.
        costs = []
        for path, result in zip(paths, rounds):
            cpu = load_json(path.replace(".json", ".cpu.json"))
            if cpu and cpu.get("window_s") and result.get("rps"):
                used = sum(cpu["cpu_seconds"].get(c, 0) for c in ("reader", "redis"))
                costs.append(used / cpu["window_s"] / result["rps"] * 1e6)
        accounts[kind] = {
            **meta,
            "cpu_us_per_request": round(sum(costs) / len(costs), 1) if costs else None,
            "cpu_us_per_request_rounds": [round(c, 1) for c in costs],
            "rounds": rounds,
            "requests": requests,
            "rps": requests / seconds if seconds else None,
            "latency_ms": {key: max(r["latency_ms"][key] for r in rounds)
                           for key in ("p50", "p99", "p999")},
            "errors": errors,
        }
        big["failures"][f"account_{kind}"] = bool(error_count(errors))
    big["accounts"] = accounts
    explain = load_json(os.path.join(big_dir, "explain.json"), {})
    big["load_account_query_ms"] = explain
    return big


def print_big(big):
    load = big.get("load") or {}
    print(f"GET /transactions over {big['rows']:,} stored transactions (scratch reader on "
          f"{os.environ.get('BENCH_BIG_ADDR', '?')}, database bench_big; "
          f"{'loaded in ' + fmt(load.get('seconds'), 1) + ' s' if load.get('loaded') else 'reused from an earlier run'})")
    for stream in big["streams"]:
        print(f"  run {stream['run']}: {stream['transactions']:,} tx, {stream['bytes'] / 1048576:,.1f} MiB in "
              f"{stream['seconds']:.2f} s (first byte {stream['ttfb_s'] * 1000:.0f} ms) = "
              f"{fmt(stream['tx_per_s'], 0)} tx/s, {stream['mib_per_s']} MiB/s; reader RSS "
              f"{stream['rss_start_mib']} -> max {stream['rss_max_mib']} MiB (growth "
              f"{stream['rss_growth_mib']} MiB, {stream['rss_samples']} samples), "
              f"{'complete' if stream['complete'] else 'INCOMPLETE: ' + '; '.join(stream['curl_errors'])}")
    for kind, entry in big.get("accounts", {}).items():
        latency = entry.get("latency_ms", {})
        print(f"  GET /accounts/{{id}} of the account with {entry.get('transactions', '?'):>7,} "
              f"transactions: {fmt(entry.get('rps'), 0)} req/s, p50 {fmt(latency.get('p50'))} ms, "
              f"p99 {fmt(latency.get('p99'))} ms (worst of {len(entry['rounds'])} alternated rounds: "
              f"{', '.join(fmt(r['rps'], 0) for r in entry['rounds'])} req/s); reader+Redis CPU "
              f"{fmt(entry.get('cpu_us_per_request'), 1)} us/request "
              f"({', '.join(fmt(c, 1) for c in entry.get('cpu_us_per_request_rounds', []))}); "
              f"errors {error_count(entry.get('errors'))}")
    for kind, entry in (big.get("load_account_query_ms") or {}).items():
        print(f"  load_account query (the cache-miss path) for the {kind} account: "
              f"{entry.get('execution_ms')} ms, {entry.get('buffers')} buffers ({entry.get('plan')})")


def peak_under_load(entry):
    """The highest RSS during the run: the sampled maximum, or VmHWM if it rose during the run
    (a spike between two samples); a VmHWM from before the run does not count."""
    peak = entry.get("rss_max_kib") or 0
    hwm_start, hwm_max = entry.get("hwm_start_kib") or 0, entry.get("hwm_max_kib") or 0
    if hwm_max > hwm_start:
        peak = max(peak, hwm_max)
    return peak


def evaluate_targets(ratios, by_name, rss, big):
    def p99(name):
        phase = by_name.get(name)
        return (phase.get("latency_ms") or {}).get("p99") if phase else None

    def check(name, measured, op, target):
        if measured is None:
            verdict = None
        else:
            verdict = measured >= target if op == ">=" else measured < target
        return {"name": name, "measured": measured, "op": op, "target": target, "pass": verdict}

    targets = [
        check("write_ratio", ratios["write_ratio"], ">=", TARGETS["write_ratio"]),
        check("read_ratio", ratios["read_ratio"], ">=", TARGETS["read_ratio"]),
        check("p99 at half load, GET /accounts/{id} (ms)", p99("half_account_read"), "<",
              TARGETS["half_read_p99_ms"]),
        check("p99 at half load, POST /transactions (ms)", p99("half_write"), "<",
              TARGETS["half_write_p99_ms"]),
    ]
    for name, entry in (rss or {}).items():
        peak = peak_under_load(entry)
        targets.append(check(f"peak RSS under load, {name} (MiB)", mib(peak), "<", TARGETS["rss_mib"]))
    if big:
        streams = big.get("streams") or []
        if streams:
            targets.append(check(f"GET /transactions, {big['rows']:,} rows (tx/s, slowest run)",
                                 min(s["tx_per_s"] or 0 for s in streams), ">=",
                                 TARGETS["list_tx_per_s"]))
            growths = [s["rss_growth_mib"] for s in streams if s["rss_growth_mib"] is not None]
            targets.append(check("GET /transactions, reader RSS growth (MiB, worst)",
                                 max(growths) if growths else None, "<",
                                 TARGETS["list_rss_growth_mib"]))
        accounts = big.get("accounts") or {}
        single, many = accounts.get("single", {}), accounts.get("big", {})
        if single.get("cpu_us_per_request") and many.get("cpu_us_per_request"):
            # "The same" within what the machine lets us resolve: the difference between the two
            # accounts must be below 10 %, or below the spread between rounds of one account.
            difference = abs(1 - many["cpu_us_per_request"] / single["cpu_us_per_request"])
            noise = max(
                (max(rounds) - min(rounds)) / (sum(rounds) / len(rounds))
                for rounds in (single["cpu_us_per_request_rounds"],
                               many["cpu_us_per_request_rounds"]))
            big["account_cost"] = {"difference": round(difference, 3),
                                   "round_to_round_noise": round(noise, 3)}
            targets.append(check(f"account read cost, {many.get('transactions', 0):,} vs 1 tx "
                                 "(CPU/request difference)", round(difference, 3), "<",
                                 round(max(TARGETS["account_cost_spread"], noise), 3)))
    return targets


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
        ("limit_write", "limit: pgbench, same SQL", "#bcbd22", "//"),
    ]
    series = [s for s in series if s[0] in by_name and by_name[s[0]].get("latency_ms")]
    percentiles = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")]
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=100)
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
    ax.axhline(5, color="#1f77b4", linestyle="--", linewidth=0.8,
               label="target: read p99 at half load < 5 ms")
    ax.axhline(15, color="#d62728", linestyle="--", linewidth=0.8,
               label="target: write p99 at half load < 15 ms")
    ax.set_yscale("log")
    ax.set_xticks(range(len(percentiles)), [label for _, label in percentiles])
    ax.set_ylabel("latency (ms, log scale)")
    settings = document["settings"]
    ax.set_title(f"Latency percentiles, read vs write — {document['machine']['cores']} cores, "
                 f"{settings['duration_s']} s/phase, {settings['read_connections']} read / "
                 f"{settings['write_connections']} write connections", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

