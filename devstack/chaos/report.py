"""The report of a run: what was done to it, what was checked, what broke, how fast it came back.

Built from the history alone (and the oracle's verdict), so a run's directory can be reported again
later: ``python -m devstack.chaos --report DIR``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from devstack.chaos.history import read_lines
from devstack.chaos.oracle import Verdict

MAX_VIOLATIONS_SHOWN = 10
FAULT_TAIL_S = 1.0  # lookups this long after a fault's end still count as "during faults"


def percentile(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def build(out: Path, verdict: Verdict, run: dict[str, Any]) -> dict[str, Any]:
    history = list(read_lines(out / "history.jsonl"))
    faults = [line for line in history if line["k"] == "fault"]
    deliveries = [line for line in history if line["k"] == "delivery"]
    final = next((line for line in history if line["k"] == "final"), None)
    webs: dict[str, str] = next((line["webs"] for line in history if line["k"] == "topology"), {})
    ops = [
        {**line, "p": path.stem.removeprefix("ops-")}
        for path in sorted(out.glob("ops-*.jsonl"))
        for line in read_lines(path)
        if line["k"] in ("lookup", "door")
    ]

    windows = [(f["t0"], f["t1"] + FAULT_TAIL_S) for f in faults]
    during = [s for t0, s in verdict.latencies_s if any(a <= t0 <= b for a, b in windows)]
    calm = [s for t0, s in verdict.latencies_s if not any(a <= t0 <= b for a, b in windows)]

    recoveries: dict[str, list[float]] = {}
    for fault in faults:
        recovered = _recovery(fault, ops, deliveries, webs)
        if recovered is not None:
            fault["recovered_s"] = round(recovered, 3)
            recoveries.setdefault(fault["kind"], []).append(recovered)

    statuses = Counter(str(d["status"]) for d in deliveries)
    report = {
        **run,
        "faults": dict(sorted(Counter(f["kind"] for f in faults).items())),
        "faults_failed": [f for f in faults if not f["ok"]],
        "ops": {
            "lookups_checked": verdict.lookups,
            "door_decisions_checked": verdict.doors,
            "facts_checked": verdict.facts_checked,
            "undecided_doors": verdict.undecided_doors,
            "errors": dict(verdict.errors),
        },
        "violations": len(verdict.violations),
        "violation_excerpts": verdict.violations[:MAX_VIOLATIONS_SHOWN],
        "events": {
            "changes": verdict.changes,
            "acknowledged": verdict.acked,
            "lost": len(verdict.lost),
            "lost_seqs": verdict.lost[:20],
            "delivery_attempts": len(deliveries),
            "statuses": dict(sorted(statuses.items())),
        },
        "latency_ms": {
            "all": {
                "p50": _ms(percentile([s for _, s in verdict.latencies_s], 0.5)),
                "p99": _ms(percentile([s for _, s in verdict.latencies_s], 0.99)),
            },
            "during_faults": {
                "p50": _ms(percentile(during, 0.5)),
                "p99": _ms(percentile(during, 0.99)),
                "n": len(during),
            },
            "calm": {"p50": _ms(percentile(calm, 0.5)), "p99": _ms(percentile(calm, 0.99)), "n": len(calm)},
        },
        "recovery_s": {
            kind: {"n": len(values), "median": round(percentile(values, 0.5) or 0, 3), "max": round(max(values), 3)}
            for kind, values in sorted(recoveries.items())
        },
        "final": final,
    }
    report["ok"] = (
        report["violations"] == 0
        and report["events"]["lost"] == 0
        and final is not None
        and not final["mismatches"]
        and not final["ttl_overruns"]
        and verdict.lookups > 0
    )
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _recovery(
    fault: dict[str, Any], ops: list[dict[str, Any]], deliveries: list[dict[str, Any]], webs: dict[str, str]
) -> float | None:
    """Seconds from the fault's start until what it broke worked again (see docs/chaos.md)."""
    kind, start, end = fault["kind"], fault["t0"], fault["t1"]
    if kind.startswith("primary_"):  # from the kill to the first event acknowledged that was sent after it
        start = fault.get("killed_at", start)
        times = [d["t1"] for d in deliveries if 200 <= d["status"] < 300 and d["t0"] > start]
    elif kind == "web_kill":  # the first 2xx of that web process after its restart
        url = webs.get(fault.get("target", ""), "")
        times = [d["t1"] for d in deliveries if 200 <= d["status"] < 300 and d["t0"] > end and d["url"].startswith(url)]
    elif kind in ("app_kill", "app_stop", "redis_cut"):  # that app's first answer to an operation invoked after it
        app = fault.get("target", "")
        times = [op["t1"] for op in ops if op["p"] == app and "e" not in op and op["t0"] > end]
    elif kind.startswith("clerk_"):  # the first answer, anywhere, to a lookup invoked after the fault's end
        times = [op["t1"] for op in ops if "e" not in op and op["t0"] > end]
    else:  # worker_kill: restarted at the fault's end
        times = [end]
    return min(times) - start if times else None


def summary(report: dict[str, Any]) -> str:
    """The report as a few lines for a terminal."""
    ops, events, latency = report["ops"], report["events"], report["latency_ms"]
    final = report["final"] or {}
    lines = [
        f"chaos: seed {report['seed']}, {report['minutes']} min, commit {report['commit']}: "
        + ("OK" if report["ok"] else "FAILED"),
        f"  faults: {report['faults']} ({len(report['faults_failed'])} failed)",
        f"  checked: {ops['lookups_checked']} lookups, {ops['door_decisions_checked']} door decisions, "
        f"{ops['facts_checked']} facts; errors {ops['errors']}; undecided doors {ops['undecided_doors']}",
        f"  violations: {report['violations']}",
        f"  events: {events['changes']} changes, {events['acknowledged']} acknowledged, {events['lost']} lost; "
        f"{events['delivery_attempts']} attempts {events['statuses']}",
        f"  lookups: p50 {latency['all']['p50']} ms, p99 {latency['all']['p99']} ms; during faults p50 "
        f"{latency['during_faults']['p50']} ms, p99 {latency['during_faults']['p99']} ms",
        f"  recovery (s): {report['recovery_s']}",
        f"  final: {final.get('users_checked')} users, {final.get('values_in_redis')} values in Redis, "
        f"{len(final.get('mismatches', []))} differ from Clerk, {len(final.get('ttl_overruns', []))} TTL overruns, "
        f"drained in {final.get('drain_s')} s",
    ]
    for violation in report["violation_excerpts"][:3]:
        lines.append(f"  VIOLATION {violation['fact']}: got {violation['got']!r} in {violation['op']}")
        lines += [f"    {entry}" for entry in violation["history"]]
    return "\n".join(lines)
