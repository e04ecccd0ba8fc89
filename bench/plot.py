"""Draw the scaling curves of a benchmark run as a PNG (``python -m bench.plot [results.json]``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent


def _series(table: dict[str, Any], field: str) -> tuple[list[int], list[float]]:
    keys = sorted(table, key=int)
    return [int(k) for k in keys], [table[k][field] for k in keys]


def plot(results: dict[str, Any], out: Path) -> None:
    fig, (hit, concurrency, workers) = plt.subplots(1, 3, figsize=(14, 4.2))
    x, ours = _series(results["hit_vs_orgs"], "ours_p50_us")
    _, base = _series(results["hit_vs_orgs"], "baseline_p50_us")
    hit.plot(x, ours, "o-", label="lookup (ours)")
    hit.plot(x, base, "s--", label="GET + json.loads")
    hit.set(title="Hit latency p50", xlabel="orgs per user", ylabel="µs", xscale="log")
    hit.legend()
    for axis, table, label in (
        (concurrency, results["drain_vs_concurrency"], "REFRESH_CONCURRENCY (1 worker process)"),
        (workers, results["drain_vs_workers"], "worker processes (concurrency 8 each)"),
    ):
        x, rate = _series(table, "rewarmed_per_s")
        axis.plot(x, rate, "o-", label="users re-warmed/s")
        axis.axhline(100, color="grey", linewidth=0.8, linestyle=":", label="Clerk production limit")
        axis.set(title="Re-warm of 1,000 users, Clerk at 60 ms", xlabel=label, ylabel="users/s", xticks=x)
        axis.legend()
    fig.suptitle(f"clerk-org-cache benchmarks, {results['when']} ({results['machine']['cpus']} cores)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    out = HERE / "curves.png"
    plot(json.loads(source.read_text()), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
