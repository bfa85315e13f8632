"""The 1,000,000-row list phase of the report (BENCH_BIG_LIST=1): its results from
bench/results/tmp/big, the printed lines and its targets (issue 6)."""

import glob
import json
import os

from report_util import error_count, fmt, load_json, mib


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



def big_targets(big, check, thresholds):
    """The list's targets: speed and memory of the stream, and an account read costing the
    same with 1 or 100,000 transactions. `check` is targets.check."""
    targets = []
    streams = big.get("streams") or []
    if streams:
        targets.append(check(f"GET /transactions, {big['rows']:,} rows (tx/s, slowest run)",
                             min(s["tx_per_s"] or 0 for s in streams), ">=",
                             thresholds["list_tx_per_s"]))
        growths = [s["rss_growth_mib"] for s in streams if s["rss_growth_mib"] is not None]
        targets.append(check("GET /transactions, reader RSS growth (MiB, worst)",
                             max(growths) if growths else None, "<",
                             thresholds["list_rss_growth_mib"]))
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
                             round(max(thresholds["account_cost_spread"], noise), 3)))
    return targets
