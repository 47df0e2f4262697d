"""Benchmark: exact on an AudioSet-scale generated set (20k clips x 400 classes) on Ray.

Generates the set with ``sedtune synth`` in a subprocess (so its memory does not count),
then tunes every class with the exact strategy over kernels {1, 3, ..., 21} (one Ray task per
(class, kernel), each reading only its class's column from the shards) at a budget of 200
evaluations, and prints wall time and peak driver memory. Goals (issue 3): under 15 minutes
and 2 GB on a 2-core machine; (issue 15) at most 300 s and 2 GB. Reference, measured in the
same run before the job: reading every class column of the set once (the floor of any pass
over the data), so the wall time is also printed as a multiple of it.

Run: python tests/benchmarks/bench_scale.py [--clips 20000] [--classes 400] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=20000)
    ap.add_argument("--classes", type=int, default=400)
    ap.add_argument("--budget", type=float, default=200)
    ap.add_argument("--data", help="reuse (or create) the generated set here instead of a temp dir")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory() if not args.data else None
    root = args.data or tmp.name  # type: ignore[union-attr]
    if not os.path.exists(os.path.join(root, "ground_truth.tsv")):
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "service.cli",
                "synth",
                root,
                "--clips",
                str(args.clips),
                "--classes",
                str(args.classes),
                "--seed",
                "0",
            ],
            check=True,
        )
        print(f"generated {args.clips} clips x {args.classes} classes in {time.perf_counter() - t0:.0f} s")

    import ray

    from envs.evaluator import MetricConfig
    from envs.params import ClassParams
    from envs.problem import DataRef, TuningProblem
    from envs.scoreset import ScoreSet
    from envs.space import SearchSpace
    from service.strategies.base import RunContext
    from service.strategies.exact import ExactStrategy

    scores = ScoreSet.open(os.path.join(root, "scores"))
    t0 = time.perf_counter()
    for c in scores.classes:
        scores.read_class(c)
    read_s = time.perf_counter() - t0
    print(f"reference: reading every class column once: {read_s:.1f} s", flush=True)

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ref = DataRef(
        os.path.join(root, "scores"),
        os.path.join(root, "ground_truth.tsv"),
        os.path.join(root, "durations.tsv"),
    )
    data = ref.load(max_cached_classes=1)
    manual = {c: ClassParams(median_filter_frames=7, threshold=0.5) for c in data.classes}
    problem = TuningProblem(ref, data, SearchSpace(), MetricConfig(), manual, n_folds=5, seed=0)
    shown = [-1]

    def progress(n: float) -> None:
        # exact reports full-set evaluations spent (budget ``args.budget``); a line per 10%.
        step = int(10 * n / args.budget)
        if step > shown[0]:
            shown[0] = step
            print(f"  {n:.1f} / {args.budget:g} evaluations, {time.perf_counter() - t0:.0f} s", flush=True)

    res = ExactStrategy().run(problem, args.budget, 0, RunContext(os.path.join(root, "work"), progress, True))
    wall = time.perf_counter() - t0
    ray.shutdown()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        f"exact: {len(data.classes)} classes x 11 kernels = {res.info['tasks']} tasks, "
        f"{res.evaluations:.0f} evaluations, tuning macro F1 {res.trajectory[-1].best_f:.4f}"
    )
    print(
        f"wall time (Ray start to result): {wall:.0f} s = {wall / 60:.1f} min; goal < 15 min: "
        f"{'PASS' if wall < 900 else 'FAIL'}"
    )
    print(f"peak driver memory: {peak_gb:.2f} GB; goal < 2 GB: {'PASS' if peak_gb < 2 else 'FAIL'}")
    print(f"wall / reading the set once: {wall / read_s:.1f}x")
    print(f"goal (issue 15) wall <= 300 s: {'PASS' if wall <= 300 else 'FAIL'}")
    print(f"goal (issue 15) peak driver memory <= 2 GB: {'PASS' if peak_gb <= 2 else 'FAIL'}")
    if tmp:
        tmp.cleanup()
    return 0 if wall <= 300 and peak_gb <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
