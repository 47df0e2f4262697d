"""The compiled kernels against the reference paths: plain Python, scipy, apply_stack, sed_eval.

The evaluator decides frames with :func:`envs.kernels.majority_runs` on the first use of a
(class, kernel) and with the level index after; both must give exactly the events of the
documented stack (:func:`tests.unit.test_stack._naive_events`), for clips of any length
(shorter than the filter's half window included) and with hysteresis.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.evalset import EvalSet
from envs.evaluator import Evaluator
from envs.events import ClassEvents
from envs.kernels import majority_runs
from envs.metrics.event_based import event_counts, event_counts_by_group
from envs.metrics.sed_eval_oracle import sed_eval_event_counts
from envs.params import ClassParams
from envs.stack import apply_stack, runs
from tests.unit.test_stack import _naive_events, _scores, clip_strategy, params_strategy


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    clips=st.lists(st.lists(st.floats(0, 1, width=32), min_size=0, max_size=25), min_size=1, max_size=5),
    k=st.sampled_from([1, 3, 5, 7, 9, 11, 21, 31]),
    threshold=st.floats(0.0, 1.0) | st.sampled_from([0.25, 0.5]),
)
def test_majority_runs_equal_scipy_median_then_threshold(clips, k, threshold):
    clips = [c for c in clips if len(c) > k // 2] or [[0.5] * (k // 2 + 1)]
    scores = _scores(clips)
    filtered = np.concatenate(
        [scipy.ndimage.median_filter(np.asarray(c, np.float32), size=k, mode="reflect") for c in clips]
        or [np.zeros(0, np.float32)]
    )
    s_ref, e_ref = runs(filtered.astype(np.float64) > threshold, scores.offsets)
    s, e = majority_runs(scores.values, scores.offsets, float(threshold), k)
    assert s.tolist() == s_ref.tolist() and e.tolist() == e_ref.tolist()


def _evalset(clips: list[list[float]], durations: np.ndarray) -> EvalSet:
    scores = _scores(clips)
    names = [f"c{i}.wav" for i in range(len(clips))]
    refs = {"x": ClassEvents.empty()}
    return EvalSet(names, ["x"], 0.1, durations, refs, lambda label: scores)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(clips=clip_strategy, params=params_strategy, with_duration=st.booleans())
def test_evaluator_events_direct_and_indexed_equal_the_plain_stack(clips, params, with_duration):
    hop = 0.1
    durations = np.array([max(len(c) - 1.5, 0.5) * hop for c in clips])
    if not with_duration:
        durations = np.full(len(clips), np.nan)
    ev = Evaluator(_evalset(clips, durations))
    direct = ev.events("x", params)  # first use: filter and threshold in one pass
    indexed = ev.events("x", params)  # second use: the level index
    assert ("x", params.median_filter_frames) in ev._levels._d
    assert Evaluator(_evalset(clips, durations)).events("x", params).clip.tolist() == direct.clip.tolist()
    expected = apply_stack(_scores(clips), params, hop, durations)
    for got in (direct, indexed):
        assert got.clip.tolist() == expected.clip.tolist()
        assert got.onset_s.tolist() == expected.onset_s.tolist()
        assert got.offset_s.tolist() == expected.offset_s.tolist()
    for i, c in enumerate(clips):
        dur = float(durations[i]) if with_duration else None
        rows = zip(direct.clip, direct.onset_s, direct.offset_s, strict=True)
        mine = [(float(a), float(b)) for cl, a, b in rows if cl == i]
        assert mine == _naive_events(np.asarray(c, np.float32), params, hop, dur)


events_strategy = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.5, 1.0]) | st.floats(0, 5),
        st.sampled_from([0.1, 0.2, 0.4, 1.0]) | st.floats(0.01, 3),
    ),
    max_size=12,
)


def _events(rows: list[tuple[int, float, float]]) -> ClassEvents:
    return ClassEvents.from_lists([r[0] for r in rows], [r[1] for r in rows], [r[1] + r[2] for r in rows])


@settings(max_examples=400, derandomize=True, deadline=None)
@given(ref=events_strategy, est=events_strategy, collar=st.sampled_from([0.0, 0.1, 0.2, 0.5]),
       pct=st.sampled_from([0.0, 0.2, 0.5]))
def test_matching_counts_equal_sed_eval(ref, est, collar, pct):
    """Crowded clips (many overlapping events) force real augmenting paths."""
    names = [f"c{i}.wav" for i in range(4)]
    r, e = _events(ref), _events(est)
    oracle, _ = sed_eval_event_counts(names, ["Dog"], {"Dog": r}, {"Dog": e}, max(collar, 1e-9), pct)
    o = oracle["Dog"]
    got = event_counts(r, e, max(collar, 1e-9), pct)
    assert (got.nref, got.nsys, got.ntp) == (o.nref, o.nsys, o.ntp)
    per_clip = event_counts_by_group(r, e, np.arange(4, dtype=np.int64), 4, max(collar, 1e-9), pct)
    assert tuple(int(x) for x in per_clip.sum(axis=0)) == (o.nref, o.nsys, o.ntp)


def test_augmenting_path_is_needed_and_found():
    # e0 hits r0 and r1, e1 hits r0 only: a greedy e0-r0 would leave e1 unmatched.
    r = ClassEvents.from_lists([0, 0], [1.0, 1.3], [2.0, 2.3])
    e = ClassEvents.from_lists([0, 0], [1.15, 1.0], [2.15, 2.0])
    assert event_counts(r, e, 0.2, 0.2).ntp == 2


def test_unsorted_estimates_are_matched_within_their_clip():
    r = ClassEvents.from_lists([0, 1], [1.0, 1.0], [2.0, 2.0])
    e = ClassEvents(np.array([1, 0], np.int64), np.array([1.0, 1.0]), np.array([2.0, 2.0]))
    assert event_counts(r, e).ntp == 2


def test_evaluator_counts_equal_sed_eval_on_clip_groups():
    rng = np.random.default_rng(3)
    clips = [rng.random(60).astype(np.float32).tolist() for _ in range(6)]
    data = _evalset(clips, np.full(6, 6.0))
    ref = apply_stack(_scores(clips), ClassParams(median_filter_frames=5, threshold=0.5), 0.1)
    data = EvalSet(data.filenames, ["x"], 0.1, np.full(6, 6.0), {"x": ref}, lambda label: _scores(clips))
    ev = Evaluator(data)
    groups = np.array([0, 1, 0, 1, 2, 2], np.int64)
    for t in (0.3, 0.5, 0.7):
        p = ClassParams(median_filter_frames=5, threshold=t)
        got = ev.class_counts_by_group("x", p, groups, 3)
        est = ev.events("x", p)
        oracle, _ = sed_eval_event_counts(data.filenames, ["x"], data.refs, {"x": est}, 0.2, 0.2)
        total = ev.class_counts("x", p)
        assert (total.nref, total.nsys, total.ntp) == (oracle["x"].nref, oracle["x"].nsys, oracle["x"].ntp)
        assert tuple(int(v) for v in got.sum(axis=0)) == (total.nref, total.nsys, total.ntp)
        assert (t == 0.5) == (total.ntp == total.nref == total.nsys)
