"""``python -m devstack.chaos --minutes N --seed S [--out DIR]`` (``./dev chaos``): one chaos run.

Exits 0 when the report is clean (no violation, no lost event, Redis equals Clerk at the end),
1 when it is not, 130 when interrupted (every process is stopped either way).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from devstack.chaos.run import run
from devstack.stack import REPO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./dev chaos",
        description="A chaos soak with an oracle: real processes, seeded faults, every lookup checked (docs/chaos.md).",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long faults and changes go on (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="the seed of every random choice (default: the time)")
    parser.add_argument("--out", type=Path, default=None, help="where the history and report go")
    parser.add_argument(
        "--wait-replicas", default="auto", help="REDIS_WAIT_REPLICAS for every process (0 turns WAIT off: a control)"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    out = args.out or REPO / ".devstack" / "chaos" / str(seed)
    try:
        report = run(args.minutes, seed, out, wait_replicas=args.wait_replicas)
    except KeyboardInterrupt:
        print("chaos: interrupted; every process was stopped", file=sys.stderr)
        return 130
    print(f"chaos: report in {out / 'report.json'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
