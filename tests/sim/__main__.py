"""Run simulated schedules: `python -m tests.sim [--schedules N] [--seed S] [--seconds T]`.

Seeds are `seed, seed + 1, ...`; each is one exact, replayable run. Prints one line per
failing seed and a summary; exits 1 if any schedule failed. Runs under PYTHONHASHSEED=0
(it re-executes itself otherwise), so a seed replays in any process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable, "-m", "tests.sim", *sys.argv[1:]],
              {**os.environ, "PYTHONHASHSEED": "0"})

from tests.sim.schedule import run_schedule


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim")
    parser.add_argument("--schedules", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop starting schedules after this many seconds")
    parser.add_argument("--faults", type=int, default=None, help="faults per schedule")
    parser.add_argument("--json", metavar="PATH", help="write a summary as JSON")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args()
    first = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    start = time.monotonic()
    runs, failed, calls, acked, unknown, faults = 0, [], 0, 0, 0, {}
    for seed in range(first, first + args.schedules):
        if args.seconds is not None and time.monotonic() - start > args.seconds:
            break
        out = run_schedule(seed, faults=args.faults)
        runs += 1
        calls += out.calls
        acked += out.acknowledged
        unknown += out.unknown
        for f in out.faults:
            faults[f] = faults.get(f, 0) + 1
        if args.verbose:
            print(f"seed {seed}: {'ok' if out.ok else 'FAIL'} faults={out.faults} "
                  f"calls={out.calls} t={out.sim_seconds:.1f}s events={out.events}")
        if not out.ok:
            failed.append(seed)
            print(f"FAILED seed {seed} (replay: python -m tests.sim --seed {seed}) "
                  f"faults={out.faults}: {out.problems[:3]}", flush=True)
    elapsed = time.monotonic() - start
    summary = {"schedules": runs, "failed": failed, "first_seed": first, "calls": calls,
               "acknowledged_writes": acked, "unknown_writes": unknown, "faults": faults,
               "seconds": round(elapsed, 1)}
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
