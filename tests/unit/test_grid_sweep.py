"""The grid-quantized sweep equals direct evaluation at every grid threshold."""

from __future__ import annotations

import numpy as np
import pytest

from envs.evalset import open_eval_set
from envs.evaluator import Evaluator
from envs.params import ClassParams
from envs.sweep import sweep_class


@pytest.mark.parametrize("kernel,gap,min_dur", [(1, 0.0, 0.0), (9, 0.2, 0.1)])
def test_grid_sweep_equals_direct(shared_sets, kernel, gap, min_dur):
    s = shared_sets["dcase2023-eval-sample"]
    ev = Evaluator(open_eval_set(s.scores, s.ground_truth, s.durations))
    grid = tuple(float(x) for x in np.linspace(0.01, 0.99, 23))
    for c in ev.data.classes:
        index = ev.grid_levels(c, kernel, grid)
        res = sweep_class(
            index,
            ev.data.refs[c],
            ev.data.frame_hop_s,
            ev.data.durations_s,
            fill_gap_s=gap,
            min_duration_s=min_dur,
        )
        at = (np.arange(len(grid)) + 0.5) / (len(grid) + 1)
        pos = np.searchsorted(res.lower, at, side="right") - 1
        for j, t in enumerate(grid):
            p = ClassParams(median_filter_frames=kernel, threshold=t, fill_gap_s=gap, min_duration_s=min_dur)
            assert ev.class_counts(c, p) == res.counts(int(pos[j])), (c, t)


def test_drop_levels_frees_indexes_and_keeps_results(shared_sets):
    s = shared_sets["dcase2023-eval-sample"]
    ev = Evaluator(open_eval_set(s.scores, s.ground_truth, s.durations))
    c = ev.data.classes[0]
    p = ClassParams(median_filter_frames=7, threshold=0.4)
    before = ev.class_counts(c, p)
    first = ev.levels(c, 7)
    assert ev.levels(c, 7) is first  # cached
    ev.drop_levels()
    again = ev.levels(c, 7)
    assert again is not first
    assert np.array_equal(again.rank, first.rank) and ev.class_counts(c, p) == before
