"""The resource soak's chart: tests/soak/plot.py REPORT.json OUT.png (scripts/soak.sh runs it).

One panel per bounded resource over time: Redis memory (with its maxmemory) and keys, the
services' RSS, PostgreSQL's size, the metric series, and the clients' p99 per sample."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)


def main(report_path, out_path):
    with open(report_path) as handle:
        report = json.load(handle)
    samples = report["samples"]
    t = [s["t"] for s in samples]
    mib = 2 ** 20
    fig, axes = plt.subplots(3, 2, figsize=(12, 10), sharex=True)
    panels = [
        ("Redis memory (MiB)", [("used", [s["redisUsedBytes"] / mib for s in samples]),
                                ("maxmemory", [s["redisMaxBytes"] / mib for s in samples])]),
        ("Redis keys", [("keys", [s["redisKeys"] for s in samples]),
                        ("evicted (total)", [s["redisEvicted"] for s in samples])]),
        ("RSS (MiB)", [("writer", [s["writerRssMiB"] for s in samples]),
                       ("reader", [s["readerRssMiB"] for s in samples])]),
        ("PostgreSQL database size (MiB)", [("size", [s["postgresBytes"] / mib for s in samples])]),
        ("metric series (writer + reader)", [("series", [s["series"] for s in samples])]),
        ("client p99 per sample (ms)", [("p99", [s["p99Ms"] for s in samples])]),
    ]
    for axis, (title, lines) in zip(axes.flat, panels):
        for label, values in lines:
            axis.plot(t, values, label=label)
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        if len(lines) > 1:
            axis.legend()
    for axis in axes[-1]:
        axis.set_xlabel("seconds")
    checks = report["checks"]
    failed = [c["name"] for c in checks if not c["pass"]]
    verdict = f"{len(checks) - len(failed)} of {len(checks)} checks passed"
    if failed:
        verdict += "; FAILED: " + "; ".join(failed)
    fig.suptitle(f"resource soak: {report['totals']['writes']:,} writes, {verdict}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    print(f"[soak] chart: {out_path}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
