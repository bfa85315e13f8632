"""The partition test's timeline: tests/partitions/plot.py HISTORY.jsonl REPORT.json OUT.png.

One row per client process; each operation a bar from its invocation to its completion, coloured
by outcome (writes: acknowledged, unknown, failed; reads: answered, failed), the faults as shaded
spans (cut or frozen until the heal, then hatched until every node was back in its role)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)
from matplotlib.patches import Patch  # noqa: E402

COLOURS = {
    ("write", "ok"): "#2ca02c",
    ("write", "info"): "#ff7f0e",
    ("write", "fail"): "#d62728",
    ("read", "ok"): "#1f77b4",
    ("read", "info"): "#7f7f7f",
    ("read", "fail"): "#7f7f7f",
}


def operations(history_path):
    """Pairs invocations with completions per process: (process, f, type, start, end)."""
    open_ops, ops = {}, []
    with open(history_path) as handle:
        for line in handle:
            if not line.strip():
                continue
            event = json.loads(line)
            p = event["process"]
            if event["type"] == "invoke":
                open_ops[p] = event
            elif p in open_ops:
                start = open_ops.pop(p)
                ops.append((p, event["f"], event["type"], start["time"] / 1000, event["time"] / 1000))
    return ops


def main(history_path, report_path, out_path):
    with open(report_path) as handle:
        report = json.load(handle)
    ops = operations(history_path)
    fig, ax = plt.subplots(figsize=(14, 5))
    for p, f, kind, start, end in ops:
        y = p * 2 + (0 if f == "write" else 1)
        ax.plot([start, max(end, start + 0.05)], [y, y], color=COLOURS[(f, kind)], linewidth=4, solid_capstyle="butt")
    for fault in report["faults"]:
        start, heal, end = fault["start"] / 1000, fault["healAt"] / 1000, fault["end"] / 1000
        ax.axvspan(start, heal, color="#d62728", alpha=0.12)
        ax.axvspan(heal, end, color="#d62728", alpha=0.05, hatch="//")
        label = f'{fault["fault"]}\nwrites back {fault["writesBackMs"] / 1000:.1f} s' if fault["writesBackMs"] is not None else fault["fault"]
        ax.text(start, -1.6, label, fontsize=7, va="top")
    processes = sorted({op[0] for op in ops})
    ax.set_yticks([p * 2 + i for p in processes for i in (0, 1)])
    ax.set_yticklabels([f"client {p} {f}" for p in processes for f in ("write", "read")], fontsize=7)
    ax.set_ylim(-4, max(processes) * 2 + 2)
    ax.set_xlabel("seconds since the clients started")
    counts = report["counts"]
    ax.set_title(
        f'{counts["writesAcked"]} writes acknowledged, {counts["writesUnknown"]} unknown, '
        f'{counts["readsOk"]} reads answered; checker: '
        + ("valid" if not report["violationsByKind"] else json.dumps(report["violationsByKind"])),
        fontsize=10,
    )
    ax.legend(handles=[Patch(color=c, label=f"{f} {k}") for (f, k), c in COLOURS.items() if not (f == "read" and k == "info")]
              + [Patch(color="#d62728", alpha=0.12, label="fault (until heal)")], fontsize=7, loc="upper right", ncol=3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:4])
