"""The stack's stages against independent references (scipy, plain Python state machines)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.levels import LevelIndex
from envs.params import ClassParams
from envs.scoreset import ClassScores
from envs.stack import apply_stack, clean, median_filter, runs


def _scores(clips: list[list[float]]) -> ClassScores:
    lengths = [len(c) for c in clips]
    offsets = np.zeros(len(clips) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    vals = np.concatenate([np.asarray(c, np.float32) for c in clips]) if clips else np.zeros(0, np.float32)
    return ClassScores("x", vals.astype(np.float32), offsets)


def _naive_events(p: np.ndarray, params: ClassParams, hop: float, duration: float | None):
    """Plain-Python reference of the documented stack for one clip."""
    k = params.median_filter_frames
    f = scipy.ndimage.median_filter(p, size=k, mode="reflect") if k > 1 else p
    f = f.astype(np.float64)
    active = []
    on = False
    for v in f:
        if params.threshold_off is None or not on:
            on = v > params.threshold
        else:
            on = v > params.threshold_off
        active.append(on)
    evs = []
    i = 0
    while i < len(active):
        if active[i]:
            j = i
            while j + 1 < len(active) and active[j + 1]:
                j += 1
            evs.append([i, j + 1])
            i = j + 1
        else:
            i += 1
    merged: list[list[int]] = []
    for s, e in evs:
        if merged and (s - merged[-1][1]) * hop < params.fill_gap_s:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    out = []
    for s, e in merged:
        if (e - s) * hop < params.min_duration_s:
            continue
        a, b = s * hop, e * hop
        if duration is not None:
            if a >= duration:
                continue
            b = min(b, duration)
        out.append((a, b))
    return out


clip_strategy = st.lists(
    st.lists(
        st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 0.75, 0.9, 1.0]) | st.floats(0, 1, width=32),
        min_size=0,
        max_size=40,
    ),
    min_size=1,
    max_size=5,
)
params_strategy = st.builds(
    ClassParams,
    median_filter_frames=st.sampled_from([1, 3, 5, 7]),
    threshold=st.sampled_from([0.25, 0.3, 0.5, 0.7]) | st.floats(0.01, 0.99),
    threshold_off=st.none() | st.sampled_from([0.1, 0.2]),
    fill_gap_s=st.sampled_from([0.0, 0.15, 0.3]),
    min_duration_s=st.sampled_from([0.0, 0.1, 0.25]),
).filter(lambda p: p.threshold_off is None or p.threshold_off <= p.threshold)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(clips=clip_strategy, params=params_strategy, with_duration=st.booleans())
def test_apply_stack_matches_plain_python(clips, params, with_duration):
    hop = 0.1
    scores = _scores(clips)
    durations = np.array([max(len(c) - 1.5, 0.5) * hop for c in clips]) if with_duration else None
    ev = apply_stack(scores, params, hop, durations)
    got = [[] for _ in clips]
    for c, a, b in zip(ev.clip, ev.onset_s, ev.offset_s, strict=True):
        got[int(c)].append((float(a), float(b)))
    for i, c in enumerate(clips):
        dur = None if durations is None else float(durations[i])
        assert got[i] == _naive_events(np.asarray(c, np.float32), params, hop, dur)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(clips=clip_strategy, threshold=st.floats(0.0, 1.0) | st.sampled_from([0.25, 0.5, 0.75, 0.9]))
def test_level_index_runs_equal_frame_runs(clips, threshold):
    scores = _scores(clips)
    index = LevelIndex.build(scores)
    s, e = index.runs_at(threshold)
    s2, e2 = runs(scores.values.astype(np.float64) > threshold, scores.offsets)
    assert s.tolist() == s2.tolist()
    assert e.tolist() == e2.tolist()


@pytest.mark.parametrize("k", [3, 7, 21])
def test_median_filter_equals_scipy_per_clip(k):
    rng = np.random.default_rng(0)
    clips = [rng.random(n).astype(np.float32).tolist() for n in (5, 30, 30, 157, 1)]
    f = median_filter(_scores(clips), k)
    for i, c in enumerate(clips):
        ref = scipy.ndimage.median_filter(np.asarray(c, np.float32), size=k, mode="reflect")
        np.testing.assert_array_equal(f.clip(i), ref)


def test_median_filter_commutes_with_threshold():
    rng = np.random.default_rng(1)
    s = _scores([rng.random(100).tolist() for _ in range(3)])
    for k in (3, 9):
        for t in (0.2, 0.5, 0.8):
            a = median_filter(s, k).values > t
            b = (
                median_filter(
                    _scores([(s.clip(i) > t).astype(np.float32).tolist() for i in range(3)]), k
                ).values
                > 0.5
            )
            np.testing.assert_array_equal(a, b)


def test_runs_do_not_cross_clips():
    s = _scores([[1, 1], [1, 0, 1], []])
    start, end = runs(s.values > 0.5, s.offsets)
    assert start.tolist() == [0, 2, 4]
    assert end.tolist() == [2, 3, 5]


def test_clean_fills_gaps_then_drops_short():
    g = np.array([0, 0, 0, 1])
    s = np.array([0, 5, 20, 0])
    e = np.array([3, 8, 21, 1])
    g2, s2, e2 = clean(g, s, e, 0.1, fill_gap_s=0.25, min_duration_s=0.15)
    # 0..3 and 5..8 merge (gap 2 frames = 0.2 s < 0.25); 20..21 and clip 1's 0..1 are too short.
    assert list(zip(g2.tolist(), s2.tolist(), e2.tolist(), strict=True)) == [(0, 0, 8)]


def test_decoding_offsets_and_clipping():
    s = _scores([[0, 1, 1, 0, 1]])
    ev = apply_stack(s, ClassParams(threshold=0.5), 0.1, np.array([0.45]))
    assert ev.onset_s.tolist() == [0.1, 0.4]
    assert ev.offset_s.tolist() == [0.30000000000000004, 0.45]


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    clips=st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=30), min_size=1, max_size=4),
    k=st.sampled_from([1, 3, 5, 7, 11, 21]),
)
def test_small_alphabet_median_equals_rank_filter(clips, k):
    from envs.stack import median_filter_levels, median_filter_values

    lengths = [len(c) for c in clips]
    offsets = np.zeros(len(clips) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    q = np.array([v for c in clips for v in c], dtype=np.int64)
    a = median_filter_levels(q, offsets, k, 7)
    b = median_filter_values(q, offsets, k)
    np.testing.assert_array_equal(a, b)
