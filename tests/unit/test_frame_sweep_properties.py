"""The frames threshold sweep equals direct evaluation at every threshold (generated cases).

:func:`envs.sweep.sweep_class` turns every clip into one pseudo-clip per distinct level
(:func:`envs.kernels.level_runs`) and counts them all at once; here, on generated clips
(empty ones, ties, constant runs, a median filter applied first or not, unknown durations,
clean-up), its counts in every threshold interval equal the documented stack
(:func:`envs.stack.apply_stack`) evaluated there, per group of clips, and sed_eval's counts
at a few intervals.
"""

from __future__ import annotations

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

from envs.events import ClassEvents
from envs.levels import LevelIndex
from envs.metrics.counts import Counts
from envs.metrics.event_based import event_counts, event_counts_by_group
from envs.metrics.sed_eval_oracle import sed_eval_event_counts
from envs.params import ClassParams
from envs.stack import apply_stack, median_filter
from envs.sweep import sweep_class
from tests.unit.test_stack import _scores, clip_strategy

HOP = 0.1


@st.composite
def references(draw: st.DrawFn, clips: list[list[float]]) -> ClassEvents:
    """Up to three events per clip, near the clip's runs at a drawn threshold (±1 frame)."""
    rows: list[tuple[int, float, float]] = []
    for i, c in enumerate(clips):
        t = draw(st.sampled_from([0.2, 0.5, 0.8]))
        active = np.asarray(c, np.float64) > t
        edges = np.flatnonzero(np.diff(np.concatenate(([0], active.astype(np.int8), [0]))))
        spans = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))[:3]
        for s, e in spans:
            ds, de = draw(st.integers(-1, 1)), draw(st.integers(-1, 1))
            on, off = max(s + ds, 0) * HOP, max(e + de, s + ds + 1, 1) * HOP
            rows.append((i, on, off))
        if draw(st.booleans()):
            on = draw(st.integers(0, max(len(c), 1))) * HOP
            rows.append((i, on, on + draw(st.integers(1, 6)) * HOP))
    rows.sort()
    return ClassEvents(
        np.array([r[0] for r in rows], np.int64),
        np.array([r[1] for r in rows], np.float64),
        np.array([r[2] for r in rows], np.float64),
    )


def _params(kernel: int, threshold: float, gap: float, min_dur: float) -> ClassParams:
    return ClassParams(
        median_filter_frames=kernel, threshold=threshold, fill_gap_s=gap, min_duration_s=min_dur
    )


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    data=st.data(),
    clips=clip_strategy,
    kernel=st.sampled_from([1, 3, 5]),
    gap=st.sampled_from([0.0, 0.15, 0.3]),
    min_dur=st.sampled_from([0.0, 0.1, 0.25]),
    with_duration=st.booleans(),
)
def test_frame_sweep_equals_direct_at_every_threshold(data, clips, kernel, gap, min_dur, with_duration):
    n = len(clips)
    durations = np.array([max(len(c) - 1.5, 0.5) * HOP for c in clips])
    if not with_duration:
        durations = np.full(n, np.nan)
    refs = data.draw(references(clips), label="refs")
    n_groups = data.draw(st.integers(1, 3), label="groups")
    groups = np.array(data.draw(st.lists(st.integers(0, n_groups - 1), min_size=n, max_size=n)), np.int64)
    scores = _scores(clips)
    index = LevelIndex.build(median_filter(scores, kernel))

    res = sweep_class(index, refs, HOP, durations, 0.2, 0.2, gap, min_dur, groups, n_groups)
    assert np.array_equal(res.upper[:-1], res.lower[1:])
    assert np.array_equal(res.group_ntp.sum(axis=0), res.ntp)
    assert np.array_equal(res.group_nsys.sum(axis=0), res.nsys)
    for i in range(len(res.thresholds)):
        probes = [float(res.thresholds[i])]
        if np.isfinite(res.lower[i]) and res.lower[i] > 0:
            probes.append(float(res.lower[i]))
        if np.isfinite(res.upper[i]) and res.upper[i] < 1:
            probes.append(float(np.nextafter(res.upper[i], -np.inf)))
        for t in probes:
            est = apply_stack(scores, _params(kernel, t, gap, min_dur), HOP, durations)
            assert event_counts(refs, est) == res.counts(i), (i, t)
            by_group = event_counts_by_group(refs, est, groups, n_groups)
            assert by_group[:, 1].tolist() == res.group_nsys[:, i].tolist()
            assert by_group[:, 2].tolist() == res.group_ntp[:, i].tolist()
    event("with true positives" if res.ntp.max(initial=0) > 0 else "without true positives")
    # And sed_eval itself at up to two intervals.
    names = [f"c{i}.wav" for i in range(n)]
    for i in data.draw(st.lists(st.integers(0, len(res.thresholds) - 1), min_size=1, max_size=2)):
        t = float(res.thresholds[i])
        est = apply_stack(scores, _params(kernel, t, gap, min_dur), HOP, durations)
        counts, _ = sed_eval_event_counts(names, ["x"], {"x": refs}, {"x": est}, 0.2, 0.2)
        o = counts["x"]
        assert res.counts(i) == Counts(o.nref, o.nsys, o.ntp), (i, t)
