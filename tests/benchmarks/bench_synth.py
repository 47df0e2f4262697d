"""Benchmark of the synthetic generator: speed on a small set, memory on a large one.

Goals:
    (a) 1000 clips x 10 classes written (scores, ground truth, durations) in < 10 s;
    (b) 100k clips x 100 classes with a peak RSS < 2 GB (run in a child process, whose
        peak RSS is read with ``getrusage(RUSAGE_CHILDREN)`` after it exits).

Usage::

    python tests/benchmarks/bench_synth.py                      # full size
    python tests/benchmarks/bench_synth.py --large-clips 10000  # quicker memory check

Exits non-zero when a goal fails.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from envs.synth import generate  # noqa: E402
from envs.synth_config import SynthConfig  # noqa: E402

SMALL_GOAL_S = 10.0
LARGE_GOAL_GB = 2.0


def _dir_size_gb(path: str) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e9


def run_child(out_dir: str, n_clips: int, n_classes: int) -> None:
    """Child mode: generate one set and print a JSON line with its wall time and counts."""
    t0 = time.perf_counter()
    res = generate(out_dir, SynthConfig(n_clips=n_clips, n_classes=n_classes))
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "n_clips": res.n_clips, "n_events": res.n_events}))


def bench_small(n_clips: int, n_classes: int) -> tuple[float, int]:
    """Time one in-process generation; returns (seconds, events)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = generate(tmp, SynthConfig(n_clips=n_clips, n_classes=n_classes))
        return time.perf_counter() - t0, res.n_events


def bench_large(n_clips: int, n_classes: int) -> dict[str, float]:
    """Generate in a child process; returns its wall time, peak RSS and output size."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
        cmd = [sys.executable, __file__, "--child", tmp, str(n_clips), str(n_classes)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        total_s = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"child failed ({proc.returncode}):\n{proc.stderr}")
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        return {
            "generate_s": float(child["wall_s"]),
            "process_s": total_s,
            "peak_rss_gb": peak_kib * 1024 / 1e9,
            "disk_gb": _dir_size_gb(tmp),
            "n_events": float(child["n_events"]),
        }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small-clips", type=int, default=1000)
    ap.add_argument("--small-classes", type=int, default=10)
    ap.add_argument("--large-clips", type=int, default=100_000)
    ap.add_argument("--large-classes", type=int, default=100)
    ap.add_argument("--skip-large", action="store_true", help="only the speed benchmark")
    ap.add_argument("--child", nargs=3, metavar=("OUT_DIR", "CLIPS", "CLASSES"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0

    rows: list[tuple[str, str, str, bool]] = []
    small_s, small_events = bench_small(args.small_clips, args.small_classes)
    rows.append(
        (
            f"(a) {args.small_clips} clips x {args.small_classes} classes: wall",
            f"{small_s:.2f} s ({small_events} events)",
            f"< {SMALL_GOAL_S:.0f} s",
            small_s < SMALL_GOAL_S,
        )
    )
    if not args.skip_large:
        print(
            f"running {args.large_clips} clips x {args.large_classes} classes in a child process ...",
            flush=True,
        )
        big = bench_large(args.large_clips, args.large_classes)
        name = f"(b) {args.large_clips} clips x {args.large_classes} classes"
        rows.append(
            (
                f"{name}: peak RSS",
                f"{big['peak_rss_gb']:.2f} GB",
                f"< {LARGE_GOAL_GB:.0f} GB",
                big["peak_rss_gb"] < LARGE_GOAL_GB,
            )
        )
        rows.append(
            (
                f"{name}: wall (generate / process)",
                f"{big['generate_s']:.1f} s / {big['process_s']:.1f} s",
                "-",
                True,
            )
        )
        rows.append(
            (f"{name}: on disk", f"{big['disk_gb']:.2f} GB ({int(big['n_events'])} events)", "-", True)
        )

    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'measured':<28}  {'goal':<8}  result")
    for label, value, goal, ok in rows:
        verdict = "PASS" if ok else "FAIL"
        print(f"{label:<{width}}  {value:<28}  {goal:<8}  {verdict if goal != '-' else ''}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
