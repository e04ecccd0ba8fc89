"""The oracle: every finished lookup and door decision, checked against Clerk's history of facts.

The rule (the guarantee, fact by fact; see `devstack.chaos.workload` for the facts): a lookup invoked at
``t0`` and completed at ``t1`` must show, for each fact it carries, a value Clerk held at some version
``j`` with

- ``j >= k``, where ``k`` is the newest change of that fact whose event was acknowledged (its first 2xx)
  before ``t0``: nothing older than an acknowledged change may be served;
- ``j == k`` or change ``j`` was applied before ``t1``: nothing from the future either.

A lookup's answer carries, per org of the run, the membership fact (its role, or absence), and where it
is a member the org fact (name, slug) and the fact of its role (the permissions). A door decision
carries the membership fact only (allowed with which role, not a member, or a role not allowed); an
undecided one (503) is counted, not checked. Times are conservative on both sides: ``applied_at`` is
taken before a change, the 2xx time after the answer, ``t0`` before a lookup, ``t1`` after it.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.chaos.app import DOOR_ROLES
from devstack.chaos.history import read_lines


def frozen(value: Any) -> Any:
    """Lists as tuples, so values compare and hash alike whether they came from JSON or not."""
    if isinstance(value, list | tuple):
        return tuple(frozen(v) for v in value)
    return value


@dataclass
class FactLog:
    """The versions of one fact: (seq, value, applied_at, acked_at), in seq order."""

    seqs: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    applied: list[float] = field(default_factory=list)
    acked: list[float] = field(default_factory=list)
    _acked_sorted: list[float] = field(default_factory=list)
    _newest_acked: list[int] = field(default_factory=list)  # per prefix of _acked_sorted: the newest index

    def add(self, seq: int, value: Any, applied_at: float, acked_at: float) -> None:
        self.seqs.append(seq)
        self.values.append(frozen(value))
        self.applied.append(applied_at)
        self.acked.append(acked_at)

    def seal(self) -> None:
        order = sorted(range(len(self.seqs)), key=lambda i: self.acked[i])
        self._acked_sorted = [self.acked[i] for i in order]
        newest = -1
        self._newest_acked = []
        for i in order:
            newest = max(newest, i)
            self._newest_acked.append(newest)

    def window(self, t0: float, t1: float) -> tuple[int, int]:
        """[k, j]: the versions a lookup invoked at t0 and completed at t1 may show."""
        count = bisect.bisect_left(self._acked_sorted, t0)
        k = self._newest_acked[count - 1] if count else 0
        j = bisect.bisect_right(self.applied, t1) - 1
        return k, max(j, k)

    def allowed(self, t0: float, t1: float) -> list[Any]:
        k, j = self.window(t0, t1)
        return self.values[k : j + 1]


@dataclass
class Verdict:
    lookups: int = 0
    doors: int = 0
    facts_checked: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    undecided_doors: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)
    changes: int = 0
    acked: int = 0
    lost: list[int] = field(default_factory=list)
    latencies_s: list[tuple[float, float]] = field(default_factory=list)  # (t0, seconds) of each answer


class Oracle:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.history = list(read_lines(out / "history.jsonl"))
        initial = next(line for line in self.history if line["k"] == "initial")
        self.orgs: list[str] = initial["orgs"]
        self.changes = {line["seq"]: line for line in self.history if line["k"] == "change"}
        self.acks: dict[int, float] = {}
        self.deliveries: dict[int, list[dict[str, Any]]] = {}
        for line in self.history:
            if line["k"] == "delivery":
                self.deliveries.setdefault(line["seq"], []).append(line)
                if 200 <= line["status"] < 300:
                    self.acks[line["seq"]] = min(self.acks.get(line["seq"], math.inf), line["t1"])
        self.facts: dict[str, FactLog] = {}
        for fact, value in initial["facts"].items():
            self.facts.setdefault(fact, FactLog()).add(0, value, -math.inf, -math.inf)
        for seq in sorted(self.changes):
            change = self.changes[seq]
            for fact, value in change["facts"].items():
                log = self.facts.setdefault(fact, FactLog())
                if not log.seqs:
                    log.add(0, None, -math.inf, -math.inf)  # a fact nobody had yet (a new role's)
                log.add(seq, value, change["applied_at"], self.acks.get(seq, math.inf))
        for log in self.facts.values():
            log.seal()

    def ops(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for path in sorted(self.out.glob("ops-*.jsonl")):
            app = path.stem.removeprefix("ops-")
            found += [{**line, "p": app} for line in read_lines(path) if line["k"] in ("lookup", "door")]
        return found

    def check(self) -> Verdict:
        verdict = Verdict(changes=len(self.changes), acked=len(self.acks))
        verdict.lost = sorted(set(self.changes) - set(self.acks))
        for op in self.ops():
            if "e" in op:
                verdict.errors[op["e"]] += 1
                continue
            verdict.latencies_s.append((op["t0"], op["t1"] - op["t0"]))
            if op["k"] == "lookup":
                verdict.lookups += 1
                self._check_lookup(op, verdict)
            else:
                verdict.doors += 1
                self._check_door(op, verdict)
        return verdict

    def _check_fact(self, op: dict[str, Any], fact: str, got: Any, verdict: Verdict) -> None:
        verdict.facts_checked += 1
        log = self.facts.get(fact)
        if log is None:
            if got is not None:
                self._violation(op, fact, got, None, verdict)
            return
        if frozen(got) not in log.allowed(op["t0"], op["t1"]):
            self._violation(op, fact, got, log, verdict)

    def _check_lookup(self, op: dict[str, Any], verdict: Verdict) -> None:
        user = op["u"]
        got = {entry[0]: entry for entry in op["r"]}
        for org in got.keys() - set(self.orgs):
            self._violation(op, f"m|{user}|{org}", got[org][1], None, verdict)
        for org in self.orgs:
            entry = got.get(org)
            self._check_fact(op, f"m|{user}|{org}", entry[1] if entry else None, verdict)
            if entry is not None:
                self._check_fact(op, f"o|{org}", [entry[2], entry[3]], verdict)
                self._check_fact(op, f"r|{entry[1]}", entry[4], verdict)

    def _check_door(self, op: dict[str, Any], verdict: Verdict) -> None:
        decision = op["d"]
        if decision == "authorization_unavailable":
            verdict.undecided_doors += 1
            return
        verdict.facts_checked += 1
        fact = f"m|{op['u']}|{op['o']}"
        log = self.facts[fact]
        if decision not in {door_decision(role) for role in log.allowed(op["t0"], op["t1"])}:
            self._violation(op, fact, decision, log, verdict)

    def _violation(self, op: dict[str, Any], fact: str, got: Any, log: FactLog | None, verdict: Verdict) -> None:
        excerpt: list[dict[str, Any]] = []
        if log is not None:
            k, j = log.window(op["t0"], op["t1"])
            for i in range(max(0, k - 1), min(len(log.seqs), j + 2)):
                seq = log.seqs[i]
                change = self.changes.get(seq, {})
                acks = [(d["t1"], d["status"]) for d in self.deliveries.get(seq, [])]
                excerpt.append(
                    {
                        "seq": seq,
                        "value": log.values[i],
                        "applied_at": log.applied[i],
                        "acked_at": log.acked[i],
                        "about": change.get("about", "initial state"),
                        "deliveries": acks[:6],
                        "in_window": k <= i <= j,
                    }
                )
        verdict.violations.append({"op": op, "fact": fact, "got": got, "history": excerpt})


def door_decision(role: Any) -> str:
    """What the door decides for a membership fact (as `cache.authz.decide` does)."""
    if role is None:
        return "not_a_member"
    return str(role) if role in DOOR_ROLES else "role_not_allowed"
