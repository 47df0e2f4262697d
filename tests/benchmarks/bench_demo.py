"""Benchmark: `sedtune demo` at its defaults, wall seconds from an empty folder.

Each run starts `sedtune demo` (generated set, every strategy at the demo's budget, local Ray,
MLflow on SQLite) in a new empty folder and times the whole process; the run must exit 0 and
its comparison table must hold a row of every strategy (manual, exact, random, bayes, rl).
Reference, measured in the same run and interleaved with the demo runs: the floor any local
Ray job pays, one process that imports Ray, starts a local instance and stops it
(``ray.init``; ``ray.shutdown``). Printed: each pair, then minimum / median / maximum of both
and the median ratio.

Goal (issue 15): the demo's median at most 30 s on this machine after install (the install
compiles the numba kernels, so no run compiles them here).

Run: python tests/benchmarks/bench_demo.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 30.0
STRATEGIES = ("manual", "exact", "random", "bayes", "rl")
FLOOR = "import ray; ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False); ray.shutdown()"


def timed(cmd: list[str], cwd: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall seconds of one process, and its result."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, done


def strategies_in_table(stdout: str) -> list[str]:
    """Strategies with a row in the demo's comparison table."""
    return [s for s in STRATEGIES if any(line.startswith(f"| {s} ") for line in stdout.splitlines())]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    sedtune = str(Path(sys.executable).with_name("sedtune"))
    demo_s: list[float] = []
    floor_s: list[float] = []
    complete = True
    print(f"{'run':>3}  {'demo s':>7}  {'floor s':>7}  strategies in the table")
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            d, done = timed([sedtune, "demo"], tmp)
            if done.returncode != 0:
                print(f"demo run {i + 1} exited {done.returncode}: {done.stderr.strip()[-500:]}")
                return 1
            present = strategies_in_table(done.stdout)
            complete &= len(present) == len(STRATEGIES)
        with tempfile.TemporaryDirectory() as tmp:
            f, done = timed([sys.executable, "-c", FLOOR], tmp)
            if done.returncode != 0:
                print(f"reference run {i + 1} exited {done.returncode}: {done.stderr.strip()[-500:]}")
                return 1
        demo_s.append(d)
        floor_s.append(f)
        print(f"{i + 1:>3}  {d:7.1f}  {f:7.1f}  {', '.join(present)}", flush=True)
    med_d, med_f = statistics.median(demo_s), statistics.median(floor_s)
    print(f"demo:      min {min(demo_s):.1f} s, median {med_d:.1f} s, max {max(demo_s):.1f} s")
    print(f"reference: min {min(floor_s):.1f} s, median {med_f:.1f} s, max {max(floor_s):.1f} s "
          f"(local Ray start and stop); demo / reference {med_d / med_f:.1f}x")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ok = med_d <= GOAL_S
    print(f"- {'met' if ok else 'missed'}: GOAL (issue 15) demo median {med_d:.1f} s <= {GOAL_S:.0f} s")
    print(f"- {'PASS' if complete else 'FAIL'}: every strategy in every run's table")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
