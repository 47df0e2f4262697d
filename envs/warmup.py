"""Compile every numba kernel once, at install time, instead of in a user's first job.

The compiled kernels (:mod:`envs.kernels`, :mod:`envs.matching`) are cached on disk next to
their modules on first use; on a fresh install that first use is the user's first job, and
every Ray worker of it compiles what it needs (about 14 s more for ``sedtune demo``: 46 s
against 32 s). :func:`warm_up` runs each decision, sweep and matching path of the evaluator
once, on a tiny generated set and with the argument types of real use, so the cache is filled
by ``deploy/install.sh`` (``python -m envs.warmup``) and every later process only loads it.
Nothing of the warm-up is kept but the cache.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

from envs.evalset import open_eval_set
from envs.evaluator import Evaluator
from envs.heldout import clip_counts
from envs.params import ClassParams
from envs.sweep import sweep_boxes, sweep_class
from envs.synth import generate
from envs.synth_config import SynthConfig

#: Per-class parameters that reach every decision path: frames without and with a median
#: filter, with hysteresis and clean-up; boxes with each merge criterion, both confidences,
#: a median filter before detection and clean-up.
WARM_PARAMS: tuple[ClassParams, ...] = (
    ClassParams(median_filter_frames=1, threshold=0.5),
    ClassParams(median_filter_frames=5, threshold=0.4, fill_gap_s=0.1, min_duration_s=0.1),
    ClassParams(median_filter_frames=3, threshold=0.5, threshold_off=0.3, fill_gap_s=0.1),
    ClassParams(median_filter_frames=1, threshold=0.5, threshold_off=0.3),
    ClassParams(decoder="boxes", median_filter_frames=1, step_filter_s=0.32, merge_abs=0.2, threshold=0.5),
    ClassParams(
        decoder="boxes",
        median_filter_frames=3,
        step_filter_s=0.48,
        merge_rel=2.0,
        confidence="max",
        threshold=0.3,
        fill_gap_s=0.1,
        min_duration_s=0.1,
    ),
)


def warm_up() -> float:
    """Run every compiled path once on a tiny generated set; returns the seconds it took."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sedtune-warmup-") as tmp:
        generate(tmp, SynthConfig(n_clips=16, n_classes=2, seed=0))
        data = open_eval_set(
            os.path.join(tmp, "scores"),
            os.path.join(tmp, "ground_truth.tsv"),
            os.path.join(tmp, "durations.tsv"),
        )
        groups = np.arange(len(data), dtype=np.int64) % 2
        for p in WARM_PARAMS:
            ev = Evaluator(data)  # fresh: the first evaluation decides directly, later ones index
            params = dict.fromkeys(data.classes, p)
            for _ in range(3):
                ev.evaluate(params)
            clip_counts(ev, params)
            ev.evaluate_segments(params)
            for c in data.classes:
                ev.class_counts_by_group(c, p, groups, 2)
                common = (
                    data.refs[c],
                    data.frame_hop_s,
                    data.durations_s,
                    0.2,
                    0.2,
                    p.fill_gap_s,
                    p.min_duration_s,
                    groups,
                    2,
                )
                if p.decoder == "boxes":
                    sweep_boxes(ev.boxes(c, p.box_setting), *common)
                else:
                    k = p.median_filter_frames
                    sweep_class(ev.levels(c, k), *common)
                    sweep_class(ev.grid_levels(c, k, (0.25, 0.5, 0.75)), *common)
    return time.perf_counter() - t0


def main() -> int:
    """``python -m envs.warmup``: fill the kernel cache, print one line."""
    print(f"sedtune: compiled kernels ready ({warm_up():.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
