"""The summary of BENCH_RUNS=N runs made back to back (bench.py runs RESULTS_DIR N): every
target's measured value in each run (results/run-1.json ... run-N.json), the median, and
PASS/MISS on the median. It is printed and written into results/latest.json (the last run's
report, with the summary under "runs")."""

import json
import os
import statistics

from report_util import load_json
from targets import last_line, show, show_limit, verdict


def median(values):
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(documents):
    """One row per target, in the order they first appear, matched by name across runs."""
    rows, index = [], {}
    for run, document in enumerate(documents):
        for target in (document or {}).get("targets", []):
            if target["name"] not in index:
                index[target["name"]] = len(rows)
                rows.append({"name": target["name"], "op": None, "target": None,
                             "info": False, "values": [None] * len(documents)})
            row = rows[index[target["name"]]]
            row["values"][run] = target["measured"]
            # The threshold of the latest run that has the target (only the account-cost
            # target's threshold depends on the run: the spread between its rounds).
            row.update(op=target["op"], target=target["target"], info=bool(target.get("info")))
    for row in rows:
        row["median"] = median(row["values"])
        row["pass"] = None if row["info"] else verdict(row["median"], row["op"], row["target"])
    return rows


def median_fields(documents):
    """The medians of the last line's fields over the runs."""
    keys = []
    for document in documents:
        for key in (document or {}).get("last_line_fields", {}):
            if key not in keys:
                keys.append(key)
    return {key: median([(d or {}).get("last_line_fields", {}).get(key) for d in documents])
            for key in keys}


def print_summary(rows, count):
    print()
    print(f"summary of {count} runs back to back: targets (issue 14; memory and the 1M-row "
          "list: issue 6), PASS/MISS on the median")
    runs = " ".join(f"{'run ' + str(n):>8}" for n in range(1, count + 1))
    print(f"        {'target':<56} {runs} {'median':>8}  target")
    for row in rows:
        word = "info" if row["info"] else {True: "PASS", False: "MISS", None: "n/a "}[row["pass"]]
        values = " ".join(f"{show(v):>8}" for v in row["values"])
        missing = sum(v is None for v in row["values"])
        note = f"   (median of {count - missing} of {count} runs)" if missing else ""
        limit = f"{row['op']} {show_limit(row['target'])}" if row["op"] else ""
        print(f"  {word}  {row['name']:<56} {values} {show(row['median']):>8}  {limit}{note}".rstrip())


def cmd_runs(results_dir, count):
    count = int(count)
    paths = [os.path.join(results_dir, f"run-{n}.json") for n in range(1, count + 1)]
    documents = [load_json(path) for path in paths]
    rows = summarize(documents)
    print_summary(rows, count)
    errors = {f"run {n}": (d or {"errors": ["no report"]}).get("errors")
              for n, d in enumerate(documents, 1)}
    errors = {run: names for run, names in errors.items() if names}
    fields = median_fields(documents)
    line = last_line(fields) + f" runs={count}"
    summary = {"count": count, "files": [os.path.basename(p) for p in paths], "targets": rows,
               "errors": errors, "last_line_median": line}
    latest = dict(documents[-1] or {})
    latest["runs"] = summary
    with open(os.path.join(results_dir, "latest.json"), "w") as handle:
        json.dump(latest, handle, indent=1)
        handle.write("\n")

    print()
    print(f"Results: {', '.join(summary['files'])} (one per run) and latest.json (the last run, "
          f"with this summary under \"runs\") in {results_dir}")
    if errors:
        print("FAILED: errors (non-2xx or socket errors) in: " +
              "; ".join(f"{run}: {', '.join(names)}" for run, names in errors.items()))
    print(line)
    return 1 if errors else 0
