"""Small helpers shared by the report's modules (report.py, targets.py, report_big.py, runs.py)."""

import json


def load_json(path, default=None):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError):
        return default


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


def peak_under_load(entry):
    """The highest RSS during the run: the sampled maximum, or VmHWM if it rose during the run
    (a spike between two samples); a VmHWM from before the run does not count."""
    peak = entry.get("rss_max_kib") or 0
    hwm_start, hwm_max = entry.get("hwm_start_kib") or 0, entry.get("hwm_max_kib") or 0
    if hwm_max > hwm_start:
        peak = max(peak, hwm_max)
    return peak


def machine_busy_seconds(cpu):
    """All cores' non-idle CPU seconds in a phase's window, whoever used them."""
    if cpu.get("machine_busy_cpu_seconds") is not None:
        return cpu["machine_busy_cpu_seconds"]
    # Results written before cpu_meter recorded it directly.
    return (cpu.get("machine_cpu_seconds") or 0) * (cpu.get("machine_busy_fraction") or 0)


def machine_cpu_us(phase):
    """CPU microseconds of the whole machine per request of a phase: busy CPU in the metered
    window / (request rate x window), i.e. busy CPU per second / requests per second."""
    if not phase:
        return None
    cpu, rps = phase.get("cpu"), phase.get("rps")
    if not cpu or not rps or not cpu.get("window_s"):
        return None
    return round(machine_busy_seconds(cpu) / cpu["window_s"] / rps * 1e6, 1)
