"""Small helpers: percentiles and medians over repetitions (these machines are noisy)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    """``n`` timings of ``fn`` in microseconds."""
    from time import perf_counter_ns

    out = []
    for _ in range(n):
        start = perf_counter_ns()
        fn()
        out.append((perf_counter_ns() - start) / 1000)
    return out


def p50_p99_over_reps(
    ours: Callable[[], object], baseline: Callable[[], object], n: int, reps: int
) -> dict[str, float]:
    """Alternate the two call by call (so drift and noise hit both alike), in ``reps``
    repetitions, and take the median of each repetition's p50 and p99."""
    repetitions = []
    for _ in range(reps):
        b: list[float] = []
        o: list[float] = []
        for _ in range(n):
            b += timed(baseline, 1)
            o += timed(ours, 1)
        repetitions.append((o, b))
    return summarize(repetitions)


def summarize(repetitions: Sequence[tuple[Sequence[float], Sequence[float]]]) -> dict[str, float]:
    """Given (ours, baseline) timings per repetition: the median of each repetition's p50 and p99, and ratios."""
    o50 = [percentile(o, 50) for o, _ in repetitions]
    o99 = [percentile(o, 99) for o, _ in repetitions]
    b50 = [percentile(b, 50) for _, b in repetitions]
    b99 = [percentile(b, 99) for _, b in repetitions]
    result = {
        "ours_p50_us": statistics.median(o50),
        "ours_p99_us": statistics.median(o99),
        "baseline_p50_us": statistics.median(b50),
        "baseline_p99_us": statistics.median(b99),
    }
    result["ratio_p50"] = result["ours_p50_us"] / result["baseline_p50_us"]
    result["ratio_p99"] = result["ours_p99_us"] / result["baseline_p99_us"]
    return result
