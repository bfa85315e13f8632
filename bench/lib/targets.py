"""The targets the report checks: issue 14's (throughput and whole-machine CPU per request
against the limits, half-load tails against the limits at the same rate, p99.9 against p50 in
every phase) and issue 6's memory and 1M-row list targets. Each target is one measured value
against a fixed threshold, so that several runs can be lined up and their median checked
(runs.py)."""

from report_big import big_targets
from report_util import fmt, machine_busy_seconds, machine_cpu_us, mib, peak_under_load

TARGETS = {
    "write_ratio": 1.25,  # POST /transactions req/s / pgbench tx/s, same clients
    "write_cpu_us": 200.0,  # whole machine's CPU per POST /transactions
    "read_ratio": 0.80,  # GET /accounts/{id} req/s / GET /ping req/s, same connections
    "read_cpu_us": 70.0,  # whole machine's CPU per GET /accounts/{id}
    "half_p99_vs_limit": 2.0,  # half-load p99 / the limit's p99 at the same rate cap
    "p999_vs_p50": 10.0,  # p99.9 / p50, every phase
    "rss_mib": 40.0,
    "list_tx_per_s": 300_000,
    "list_rss_growth_mib": 20.0,
    "account_cost_spread": 0.10,
    "refused_vs_clean": 0.90,  # POST req/s with 2 % refused / the same script with none refused
}

# The phases that measure the parts the stack is built on; all others measure the stack.
LIMIT_PHASES = ("limit_write", "limit_read", "half_limit_write", "half_ping")

OPERATORS = {
    ">=": lambda measured, target: measured >= target,
    "<=": lambda measured, target: measured <= target,
    "<": lambda measured, target: measured < target,
}


def verdict(measured, op, target):
    """True/False, or None when there is nothing to judge (no value, or an info line)."""
    if measured is None or op is None:
        return None
    return OPERATORS[op](measured, target)


def check(name, measured, op, target, detail=None):
    return {"name": name, "measured": measured, "op": op, "target": target,
            "pass": verdict(measured, op, target), "detail": detail}


def info(name, measured, detail=None):
    """A figure printed beside the targets for comparison, without a verdict."""
    return {"name": name, "measured": measured, "op": None, "target": None, "pass": None,
            "info": True, "detail": detail}


def ratio(a, b, digits=3):
    return round(a / b, digits) if a is not None and b else None


def cpu_detail(phase):
    cpu = (phase or {}).get("cpu")
    if not cpu or not cpu.get("machine_cpu_seconds"):
        return None
    total = cpu["machine_cpu_seconds"]
    others = cpu["cpu_seconds"].get("other", 0) / total
    steal = (cpu.get("machine_steal_seconds") or 0) / total
    return (f"{machine_busy_seconds(cpu):.1f} busy CPU-s in {cpu['window_s']:.1f} s at "
            f"{fmt(phase.get('rps'), 0)}/s; machine {cpu.get('machine_busy_fraction') or 0:.0%} "
            f"busy, of it others {others:.0%}, steal {steal:.0%}")


def throughput_targets(ratios, by_name):
    def rps(name):
        return (by_name.get(name) or {}).get("rps")

    def cpu(name):
        return machine_cpu_us(by_name.get(name))

    return [
        check("write: POST /transactions req/s / pgbench tx/s", ratios.get("write_ratio"), ">=",
              TARGETS["write_ratio"],
              f"{fmt(rps('stack_write'), 0)} vs {fmt(rps('limit_write'), 0)}/s, same clients"),
        check("write: machine CPU per POST /transactions (us)", cpu("stack_write"), "<=",
              TARGETS["write_cpu_us"], cpu_detail(by_name.get("stack_write"))),
        info("write: machine CPU per pgbench transaction (us)", cpu("limit_write"),
             cpu_detail(by_name.get("limit_write"))),
        check("read: GET /accounts/{id} req/s / GET /ping req/s", ratios.get("read_ratio"), ">=",
              TARGETS["read_ratio"],
              f"{fmt(rps('stack_account_read'), 0)} vs {fmt(rps('limit_read'), 0)}/s via nginx"),
        check("read: machine CPU per GET /accounts/{id} (us)", cpu("stack_account_read"), "<=",
              TARGETS["read_cpu_us"], cpu_detail(by_name.get("stack_account_read"))),
        info("read: machine CPU per GET /ping (us)", cpu("limit_read"),
             cpu_detail(by_name.get("limit_read"))),
    ]


def tail_target(by_name, name, stack, limit):
    """p99 of a stack phase at half load / p99 of its limit at the same rate cap."""
    s, l = by_name.get(stack) or {}, by_name.get(limit) or {}
    p_s, p_l = (s.get("latency_ms") or {}).get("p99"), (l.get("latency_ms") or {}).get("p99")
    caps = (s.get("rate_target"), l.get("rate_target"))
    detail = (f"p99 {fmt(p_s)} vs {fmt(p_l)} ms; cap {fmt(caps[0], 0)}/s"
              f"{'' if caps[0] == caps[1] else ' vs ' + fmt(caps[1], 0) + '/s (NOT the same)'}, "
              f"reached {fmt(s.get('rps'), 0)} and {fmt(l.get('rps'), 0)}/s")
    scheduled = (l.get("latency_from_schedule_ms") or {}).get("p99")
    if scheduled is not None:
        # pgbench -R: the p99 used is from each transaction's actual start, like wrk's.
        detail += f"; pgbench's p99 from its schedule {fmt(scheduled)} ms"
    return check(name, ratio(p_s, p_l), "<=", TARGETS["half_p99_vs_limit"], detail)


def spread_targets(phases):
    """p99.9 <= 10 x p50 in every phase, stack and limit alike (labelled)."""
    targets = []
    for phase in phases:
        latency = phase.get("latency_ms") or {}
        kind = "limit" if phase["name"] in LIMIT_PHASES else "stack"
        targets.append(check(f"{kind} phase {phase['name']}: p99.9 / p50",
                             ratio(latency.get("p999"), latency.get("p50"), 2), "<=",
                             TARGETS["p999_vs_p50"],
                             f"{fmt(latency.get('p999'))} / {fmt(latency.get('p50'))} ms"))
    return targets


def evaluate_targets(ratios, by_name, phases, rss, big):
    targets = throughput_targets(ratios, by_name)
    if "half_account_read" in by_name or "half_ping" in by_name:
        targets.append(tail_target(by_name, "tail: p99 GET /accounts/{id} / p99 GET /ping, same cap",
                                   "half_account_read", "half_ping"))
    if "half_write" in by_name or "half_limit_write" in by_name:
        targets.append(tail_target(by_name, "tail: p99 POST /transactions / p99 pgbench, same cap",
                                   "half_write", "half_limit_write"))
    if "refused_write" in by_name:
        targets.append(check("POST req/s with refused rows / with none, same script",
                             ratios.get("refused_vs_clean"), ">=", TARGETS["refused_vs_clean"]))
    targets += spread_targets(phases)
    for name, entry in (rss or {}).items():
        targets.append(check(f"peak RSS under load, {name} (MiB)", mib(peak_under_load(entry)),
                             "<", TARGETS["rss_mib"]))
    if big:
        targets += big_targets(big, check, TARGETS)
    return targets


def show(value):
    """A measured value or threshold, as wide as it needs."""
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.1f}"


def show_limit(value):
    """A threshold as written in the issue (1.25, 200, 300,000)."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:g}"


def verdict_word(target):
    if target.get("info"):
        return "info"
    return {True: "PASS", False: "MISS", None: "n/a "}[target["pass"]]


def print_targets(targets):
    print()
    print("targets (issue 14; memory and the 1M-row list: issue 6)")
    for target in targets:
        line = f"  {verdict_word(target)}  {target['name']:<56} {show(target['measured']):>8}"
        line += f"  {target['op']} {show_limit(target['target']):<7}" if target["op"] else " " * 12
        if target.get("detail"):
            line += f"   ({target['detail']})"
        print(line.rstrip())
    print("  (machine CPU: all cores' busy time in the phase, from /proc/stat, per request; "
          "pgbench at half load: latency from each transaction's actual start, as wrk's)")


def last_line_fields(ratios, by_name):
    """The fields of the report's last line, in order (runs.py prints their medians)."""
    def rps(name):
        value = (by_name.get(name) or {}).get("rps")
        return round(value) if value else 0

    def cpu(name):
        value = machine_cpu_us(by_name.get(name))
        return round(value) if value is not None else None

    return {
        "write_ratio": ratios.get("write_ratio"),
        "read_ratio": ratios.get("read_ratio"),
        "write_rps": rps("stack_write"),
        "read_rps": rps("stack_account_read"),
        "write_cpu_us": cpu("stack_write"),
        "read_cpu_us": cpu("stack_account_read"),
    }


def last_line(fields):
    def one(key, value):
        if value is None:
            return "-"
        return fmt(value) if key.endswith("_ratio") else str(round(value))

    return " ".join(f"{key}={one(key, value)}" for key, value in fields.items())
