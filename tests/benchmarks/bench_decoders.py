"""Benchmark: exact over the authors' 18 box settings, every threshold, on one tuning half.

On one 584-clip tuning half of desed-validation/dcase2021-baseline-student (the runner's split
of seed 0) it runs the exact strategy in-process (no Ray) over the box grid of Ebbers et al.
(step filter 0.32 / 0.48 / 0.64 s x merge absolute 0.15 / 0.2 / 0.3 or relative 1.5 / 2 / 3)
with every box-confidence threshold (budget None: every decision), and prints its wall
seconds. Reference, measured in the same run: the same grid decoded and evaluated setting by
setting, threshold by threshold (envs.decoders.class_events at each threshold, counted with
the evaluator's matching), on a sample of the thresholds of every (class, setting); its full
cost is that sample's per-threshold time times the number of thresholds exact covered. The
counts of the sample must equal the sweep's at the same thresholds (checked).

Goal (issue 10): exact under 2 s wall on this machine.

Run: python tests/benchmarks/bench_decoders.py [--sample 8] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from envs.decoders import class_events
from envs.evaluator import Evaluator
from envs.importers import import_tsv_folder
from envs.metrics.event_based import event_counts
from envs.params import ClassParams
from envs.problem import DataRef, TuningProblem
from envs.space import AUTHORS_MERGE, AUTHORS_STEP_FILTER_S, SearchSpace
from envs.split import split_names
from envs.sweep import sweep_boxes
from service.strategies.base import RunContext
from service.strategies.exact import ExactStrategy
from service.strategies.options import ExactOptions

GOAL_S = 2.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, default=8, help="reference thresholds per (class, setting)")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    args = ap.parse_args()
    base = Path(args.shared) / "desed-validation"
    space = SearchSpace(decoders=("boxes",), box_step_filter_s=AUTHORS_STEP_FILTER_S, box_merge=AUTHORS_MERGE)
    with tempfile.TemporaryDirectory() as tmp:
        scores = f"{tmp}/scores"
        import_tsv_folder(str(base / "dcase2021-baseline-student" / "scores"), scores)
        full = DataRef(scores, str(base / "ground_truth.tsv"), str(base / "durations.tsv"))
        everything = full.load()
        tune_idx, _ = split_names(everything.filenames, 0.5, 0)
        ref = DataRef(
            full.scores, full.ground_truth, full.durations, tuple(everything.filenames[i] for i in tune_idx)
        )
        tuning = ref.load()
        # Read every class column before timing: both sides start from scores in memory.
        for c in tuning.classes:
            tuning.scores(c)
        manual = {c: ClassParams(median_filter_frames=7, threshold=0.5) for c in tuning.classes}
        problem = TuningProblem(ref, tuning, space, Evaluator(tuning).metric, manual)
        strategy = ExactStrategy(ExactOptions(max_candidates_per_setting=100_000))
        ctx = RunContext(f"{tmp}/work", lambda spent: None, use_ray=False)
        t0 = time.perf_counter()
        result = strategy.run(problem, None, 0, ctx)
        exact_s = time.perf_counter() - t0
        n_thresholds = int(result.evaluations) * len(tuning.classes)

        # Reference: decode and evaluate threshold by threshold (a sample of each curve).
        ev = Evaluator(tuning)
        hop, dur = tuning.frame_hop_s, tuning.durations_s
        rng = np.random.default_rng(0)
        timed, spent, mismatches = 0, 0.0, 0
        for c in tuning.classes:
            for s in space.settings:
                params = s.with_threshold(0.5)
                res = sweep_boxes(ev.boxes(c, params.box_setting), tuning.refs[c], hop, dur)
                n_thr = len(res.thresholds)
                pick = rng.choice(n_thr, size=min(args.sample, n_thr), replace=False)
                for i in pick:
                    p = s.with_threshold(float(res.thresholds[i]))
                    t1 = time.perf_counter()
                    counts = event_counts(tuning.refs[c], class_events(tuning.scores(c), p, hop, dur))
                    spent += time.perf_counter() - t1
                    timed += 1
                    mismatches += counts != res.counts(int(i))
    per = spent / timed
    reference_s = per * n_thresholds
    print(
        f"tuning clips {len(tuning)}, classes {len(tuning.classes)}, box settings {len(space.settings)}, "
        f"thresholds covered by exact {n_thresholds} ({result.evaluations:.0f} full-set evaluations)"
    )
    print(f"exact (sweep, every threshold): {exact_s:.2f} s wall")
    print(
        f"reference (decode + evaluate per threshold): {per * 1e3:.2f} ms per (class, threshold) over "
        f"{timed} sampled, {reference_s:.0f} s for all {n_thresholds}; ratio {reference_s / exact_s:.0f}x"
    )
    print(f"sampled counts equal to the sweep's: {timed - mismatches}/{timed}")
    ok = exact_s <= GOAL_S
    print(f"- {'met' if ok else 'missed'}: GOAL exact {exact_s:.2f} s <= {GOAL_S} s")
    print(f"- {'PASS' if mismatches == 0 else 'FAIL'}: sweep counts equal direct evaluation")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
