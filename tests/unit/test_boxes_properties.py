"""Property tests of the ``boxes`` decoder on generated score curves (hypothesis, derandomized).

Curves: ragged clips of 0-60 frames per class, raw float32 values, quantized grids, plateaus,
exact zeros, ties, sparse bumps, clips that start and/or end active. Settings: kernels 1-7,
step filters from a fraction of a frame to several seconds, merge criteria absolute / relative /
both / none, mean and max confidence, gap filling and minimum duration on and off (also
exactly on the frame grid), durations unknown, equal to, shorter or longer than the frames.
Thresholds: the boxes' own confidences (ties with the strict >), grid values, arbitrary floats.

(a) the evaluator's and the inference API's events equal a plain-Python oracle of the
    documented thresholding/cleaning/decoding, and their counts equal sed_eval 0.2.1's;
(b) :func:`envs.sweep.sweep_boxes` equals direct :func:`envs.boxes.box_events` +
    :func:`envs.metrics.event_based.event_counts` at every threshold interval (middle, lower
    end, largest float below the upper end), per clip group too, and sed_eval at some;
(c) invariants of :func:`envs.boxes.detect_boxes` that hold whatever the change-point and
    merge rules: sorted, inside the clip, non-overlapping, confidence = the max of the filtered
    curve over the box or a mean between its min and max (the mean itself for a box that
    merged nothing), per-clip independence (clip order, clips alone), median
    filter = scipy's, merging only joins consecutive candidate boxes (and more with a larger
    criterion), a constant clip is one box;
(d) :func:`envs.decoders.clip_events` on each clip equals :func:`envs.decoders.score_set_events`
    on the Parquet score set holding those clips.

Every run checks the same cases (``derandomize=True``); 800 of them run sed_eval.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from envs.boxes import Boxes, box_events, detect_boxes
from envs.decoders import class_events, clip_events, score_set_events
from envs.evalset import EvalSet
from envs.evaluator import Evaluator, MetricConfig
from envs.events import ClassEvents
from envs.metrics.counts import Counts
from envs.metrics.event_based import event_counts
from envs.metrics.fscore import class_f_measure, macro_f_measure
from envs.metrics.sed_eval_oracle import MACRO_KEY, sed_eval_event_counts
from envs.params import BoxSetting, ClassParams, ParamFile
from envs.scoreset import ClassScores
from envs.scorewriter import ScoreSetWriter
from envs.sweep import sweep_boxes
from tests.unit import box_oracles as oracle

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

LABELS = ("Dog", "Cat", "Speech")
HOPS = (0.064, 0.06375, 0.1, 0.02)
MAX_FRAMES = 60

SED_EVAL_EXAMPLES = 500  # (a)
SWEEP_EXAMPLES = 300  # (b); each also runs sed_eval
INVARIANT_EXAMPLES = 400  # (c)
API_EXAMPLES = 60  # (d): writes a Parquet set per example
# Mean confidences are sums of float32 values in float64: exact for curves without tiny values,
# within a few ulps of the clip's running sum otherwise.
MEAN_TOL = 1e-12


def property_settings(max_examples: int) -> settings:
    """Seeded (derandomized) hypothesis settings: the same cases on every CI run."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------- strategies

levels = st.one_of(
    st.sampled_from([0.0, 0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0]),
    st.floats(0.0, 1.0, width=32),
)


@st.composite
def curves(draw: st.DrawFn, n: int) -> list[float]:
    """One clip's scores of one class (n frames)."""
    if n == 0:
        return []
    kind = draw(st.sampled_from(["raw", "quantized", "plateaus", "plateaus", "sparse", "ties"]))
    if kind == "raw":
        vals = draw(st.lists(st.floats(0.0, 1.0, width=32), min_size=n, max_size=n))
    elif kind == "quantized":
        q = draw(st.sampled_from([2, 4, 10, 50, 99]))
        vals = [k / q for k in draw(st.lists(st.integers(0, q), min_size=n, max_size=n))]
    elif kind == "plateaus":
        vals = []
        while len(vals) < n:
            vals += [draw(levels)] * draw(st.integers(1, 15))
        vals = vals[:n]
    elif kind == "sparse":
        vals = [0.0] * n
        for _ in range(draw(st.integers(0, 3))):
            a, w, h = draw(st.integers(0, n - 1)), draw(st.integers(1, 10)), draw(levels)
            vals[a : a + w] = [h] * len(vals[a : a + w])
    else:
        vals = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=n, max_size=n))
    edge = draw(st.sampled_from(["none", "none", "start", "end", "both"]))
    m = min(n, draw(st.integers(1, 6)))
    high = draw(st.sampled_from([1.0, 0.9, 0.6]))
    if edge in ("start", "both"):
        vals[:m] = [high] * m
    if edge in ("end", "both"):
        vals[n - m :] = [high] * m
    return vals


@st.composite
def box_settings(draw: st.DrawFn, hop: float) -> BoxSetting:
    """Any valid box setting."""
    step = draw(
        st.one_of(
            st.sampled_from([0.16, 0.32, 0.48, 0.64, 0.96]),
            st.sampled_from([0.5, 1.0, 2.0, 2.5, 3.0, 5.0, 100.0]).map(lambda f: min(f * hop, 60.0)),
            st.floats(0.01, 3.0),
        )
    )
    abs_values = st.sampled_from([0.05, 0.1, 0.2, 0.3, 1.0]) | st.floats(0.001, 1.0)
    rel_values = st.sampled_from([1.01, 1.5, 2.0, 3.0, 10.0]) | st.floats(1.001, 20.0)
    merge_abs = draw(st.none() | abs_values)
    merge_rel = draw(st.none() | rel_values)
    return BoxSetting(
        median_filter_frames=draw(st.sampled_from([1, 1, 1, 3, 5, 7])),
        step_filter_s=step,
        merge_abs=merge_abs,
        merge_rel=merge_rel,
        confidence=draw(st.sampled_from(["mean", "max"])),
    )


def clean_up(hop: float) -> st.SearchStrategy[float]:
    """Gap / minimum-duration values: off, on the frame grid (boundary cases), arbitrary."""
    return st.one_of(
        st.just(0.0), st.just(0.0), st.integers(1, 5).map(lambda k: k * hop), st.floats(0.0, 1.0)
    )


@dataclass(frozen=True)
class Curves:
    """Generated scores: per class, float32 values of ragged clips, and the clip durations."""

    hop: float
    offsets: I64
    values: dict[str, F32]
    durations: F64 | None  # None: unknown (NaN in an EvalSet)

    @property
    def n_clips(self) -> int:
        return len(self.offsets) - 1

    @property
    def filenames(self) -> list[str]:
        return [f"clip{i:02d}.wav" for i in range(self.n_clips)]

    def durations_nan(self) -> F64:
        return np.full(self.n_clips, np.nan) if self.durations is None else self.durations

    def clip(self, label: str, i: int) -> F32:
        return self.values[label][self.offsets[i] : self.offsets[i + 1]]


def durations_for(n: int, hop: float) -> st.SearchStrategy[float]:
    """A clip's duration: the frames' span, a bit or half shorter, longer, or unknown (NaN)."""
    return st.sampled_from([n * hop, n * hop, n * hop - hop / 3, 0.5 * n * hop, n * hop + 1.0, math.nan])


@st.composite
def score_curves(draw: st.DrawFn, n_classes: int, max_clips: int = 4) -> Curves:
    """Ragged clips (0-60 frames, one length per clip for all classes) and optional durations."""
    hop = draw(st.sampled_from(HOPS))
    lengths = draw(
        st.lists(
            st.one_of(st.integers(0, MAX_FRAMES), st.sampled_from([0, 1, 2, 3])),
            min_size=1,
            max_size=max_clips,
        )
    )
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = {}
    for label in LABELS[:n_classes]:
        per_clip = [draw(curves(n)) for n in lengths]
        values[label] = np.array([v for c in per_clip for v in c], np.float32)
    durations = None
    if draw(st.booleans()):
        durations = np.array([draw(durations_for(n, hop)) for n in lengths], np.float64)
    return Curves(hop, offsets, values, durations)


def candidate_events(boxes: Boxes, hop: float) -> list[tuple[int, float, float]]:
    """Every candidate box as (clip, onset, offset) seconds."""
    return [(int(c), s * hop, e * hop) for c, s, e in zip(boxes.clip, boxes.start, boxes.end, strict=True)]


@st.composite
def references_near(
    draw: st.DrawFn, near: Sequence[tuple[int, float, float]], n_clips: int, hop: float, collar: float
) -> ClassEvents:
    """Reference events: shifted copies of some candidate events (hits and near misses) and others."""
    rows: list[tuple[int, float, float]] = []
    shifts = st.one_of(
        st.just(0.0),
        st.sampled_from([collar, -collar, hop, -hop, 2 * hop, -2 * hop]),
        st.floats(-1.0, 1.0),
    )
    for c, on, off in near:
        for _ in range(draw(st.sampled_from([0, 1, 1, 2]))):
            a = max(0.0, on + draw(shifts))
            rows.append((c, a, max(a, off + draw(shifts))))
    for _ in range(draw(st.integers(0, 3))):
        c = draw(st.integers(0, n_clips - 1))
        a = draw(st.integers(0, MAX_FRAMES)) * hop
        rows.append((c, a, a + draw(st.integers(0, 20)) * hop))
    return ClassEvents.from_lists([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def thresholds_for(boxes: Boxes) -> st.SearchStrategy[float]:
    """Thresholds in (0, 1): a box's own confidence (the strict > boundary), a grid value, any."""
    confs = [float(c) for c in boxes.confidence if 0.0 < c < 1.0]
    options = [st.sampled_from([0.1, 0.25, 0.5, 0.75, 0.9]), st.floats(0.001, 0.999)]
    if confs:
        options += [st.sampled_from(confs), st.sampled_from(confs)]
    return st.one_of(*options)


# --------------------------------------------------------------------------- (a) sed_eval


@property_settings(SED_EVAL_EXAMPLES)
@given(data=st.data(), n_classes=st.integers(1, 3))
def test_events_and_counts_equal_oracle_and_sed_eval(data: st.DataObject, n_classes: int) -> None:
    sc = data.draw(score_curves(n_classes), label="curves")
    collar = data.draw(st.sampled_from([0.2, 0.2, 0.1, 0.064, 0.5]), label="collar")
    pct = data.draw(st.sampled_from([0.2, 0.2, 0.0, 0.5, 1.0]), label="pct")
    classes = list(sc.values)
    params: dict[str, ClassParams] = {}
    refs: dict[str, ClassEvents] = {}
    for c in classes:
        gap, min_dur = data.draw(clean_up(sc.hop), label="gap"), data.draw(clean_up(sc.hop), label="min")
        if data.draw(st.integers(0, 4), label="frames?") == 0:  # a frames class among box classes
            p = ClassParams(
                median_filter_frames=data.draw(st.sampled_from([1, 3, 5])),
                threshold=data.draw(st.floats(0.01, 0.99)),
                fill_gap_s=gap,
                min_duration_s=min_dur,
            )
            near = candidate_events(
                detect_boxes(sc.values[c], sc.offsets, sc.hop, BoxSetting(1, 0.32, None, None)), sc.hop
            )
        else:
            bs = data.draw(box_settings(sc.hop), label="box setting")
            boxes = detect_boxes(sc.values[c], sc.offsets, sc.hop, bs)
            p = ClassParams(
                decoder="boxes",
                median_filter_frames=bs.median_filter_frames,
                step_filter_s=bs.step_filter_s,
                merge_abs=bs.merge_abs,
                merge_rel=bs.merge_rel,
                confidence=bs.confidence,
                threshold=data.draw(thresholds_for(boxes), label="threshold"),
                fill_gap_s=gap,
                min_duration_s=min_dur,
            )
            near = candidate_events(boxes, sc.hop)
        params[c] = p.validate("generated")
        refs[c] = data.draw(references_near(near, sc.n_clips, sc.hop, collar), label="refs")

    values, offsets = sc.values, sc.offsets
    es = EvalSet(
        sc.filenames, classes, sc.hop, sc.durations_nan(), refs, lambda c: ClassScores(c, values[c], offsets)
    )
    ev = Evaluator(es, MetricConfig(t_collar_s=collar, percentage_of_length=pct))
    expected: dict[str, ClassEvents] = {}
    for c in classes:
        p = params[c]
        if p.decoder == "boxes":
            want = oracle.box_events(
                detect_boxes(values[c], offsets, sc.hop, p.box_setting),
                p.threshold,
                sc.hop,
                sc.durations,
                p.fill_gap_s,
                p.min_duration_s,
            )
        else:
            want = oracle.frame_events(values[c], offsets, p, sc.hop, sc.durations)
        assert oracle.same_events(ev.events(c, p), want), c
        got_api = class_events(ClassScores(c, values[c], offsets), p, sc.hop, sc.durations)
        assert oracle.same_events(got_api, want), c
        expected[c] = want
    o_counts, o_f = sed_eval_event_counts(sc.filenames, classes, refs, expected, collar, pct)
    result = ev.evaluate(params)
    _coverage_events(sc, params, expected, [o_counts[c].ntp for c in classes])
    for c in classes:
        o = o_counts[c]
        assert ev.class_counts(c, params[c]) == Counts(o.nref, o.nsys, o.ntp), c
        assert result.per_class[c].counts == Counts(o.nref, o.nsys, o.ntp), c
    assert _same_float(result.macro_f, o_f[MACRO_KEY])


def _coverage_events(
    sc: Curves, params: dict[str, ClassParams], events: dict[str, ClassEvents], ntp: list[int]
) -> None:
    """Label what a case exercises (``pytest --hypothesis-show-statistics``)."""
    event(f"decoders: {sorted({p.decoder for p in params.values()})}")
    event("some events" if any(len(e) for e in events.values()) else "no events")
    event("some true positives" if sum(ntp) else "no true positive")
    event("durations known" if sc.durations is not None else "durations unknown")
    for c, p in params.items():
        if p.decoder == "boxes":
            confs = detect_boxes(sc.values[c], sc.offsets, sc.hop, p.box_setting).confidence
            if np.any(confs == p.threshold):
                event("threshold equals a box confidence")
        if p.fill_gap_s > 0 and len(events[c]) > 0:
            event("gap filling on, with events")
        if sc.durations is not None and np.any(events[c].offset_s == sc.durations[events[c].clip]):
            event("an offset clipped to the duration")


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# --------------------------------------------------------------------------- (b) the sweep


@property_settings(SWEEP_EXAMPLES)
@given(data=st.data())
def test_sweep_equals_direct_at_every_threshold(data: st.DataObject) -> None:
    sc = data.draw(score_curves(1, max_clips=6), label="curves")
    label = LABELS[0]
    bs = data.draw(box_settings(sc.hop), label="box setting")
    gap, min_dur = data.draw(clean_up(sc.hop), label="gap"), data.draw(clean_up(sc.hop), label="min")
    collar = data.draw(st.sampled_from([0.2, 0.1, 0.5]), label="collar")
    pct = data.draw(st.sampled_from([0.2, 0.0, 1.0]), label="pct")
    boxes = detect_boxes(sc.values[label], sc.offsets, sc.hop, bs)
    near = candidate_events(boxes, sc.hop)
    refs = data.draw(references_near(near, sc.n_clips, sc.hop, collar), label="refs")
    n_groups = data.draw(st.integers(1, 3), label="groups")
    groups = np.array(
        data.draw(
            st.lists(st.integers(0, n_groups - 1), min_size=sc.n_clips, max_size=sc.n_clips),
            label="group of each clip",
        ),
        np.int64,
    )
    dur = sc.durations_nan()

    res = sweep_boxes(boxes, refs, sc.hop, dur, collar, pct, gap, min_dur, groups, n_groups)
    # One interval per distinct confidence decision; together they tile (0, 1).
    assert len(res.thresholds) >= 1
    assert res.lower[0] <= 0.0 and res.upper[-1] >= 1.0
    assert np.array_equal(res.upper[:-1], res.lower[1:])
    assert np.all((res.lower <= res.thresholds) & (res.thresholds < res.upper))
    assert res.nref == len(refs) == int(res.group_nref.sum())
    assert np.array_equal(res.group_ntp.sum(axis=0), res.ntp)
    assert np.array_equal(res.group_nsys.sum(axis=0), res.nsys)
    for i in range(len(res.thresholds)):
        probes = [float(res.thresholds[i])]
        if np.isfinite(res.lower[i]):
            probes.append(float(res.lower[i]))
        if np.isfinite(res.upper[i]):
            probes.append(float(np.nextafter(res.upper[i], -np.inf)))
        for t in probes:
            est = box_events(boxes, t, sc.hop, dur, gap, min_dur)
            assert event_counts(refs, est, collar, pct) == res.counts(i), (i, t)
        est = box_events(boxes, float(res.thresholds[i]), sc.hop, dur, gap, min_dur)
        for g in range(n_groups):
            keep = groups == g
            ident = np.arange(sc.n_clips, dtype=np.int64)
            cg = event_counts(refs.select_clips(keep, ident), est.select_clips(keep, ident), collar, pct)
            assert cg == Counts(int(res.group_nref[g]), int(res.group_nsys[g, i]), int(res.group_ntp[g, i]))
    event(f"sweep intervals: {min(len(res.thresholds), 10)}{'+' if len(res.thresholds) >= 10 else ''}")
    event("sweep with true positives" if res.ntp.max(initial=0) > 0 else "sweep without true positives")
    # And sed_eval at up to three intervals, on the plain-Python oracle's events.
    intervals = st.integers(0, len(res.thresholds) - 1)
    picks = data.draw(st.lists(intervals, min_size=1, max_size=3), label="picks")
    for i in picks:
        t = float(res.thresholds[i])
        est = oracle.box_events(boxes, t, sc.hop, sc.durations, gap, min_dur)
        o_counts, o_f = sed_eval_event_counts(sc.filenames, [label], {label: refs}, {label: est}, collar, pct)
        o = o_counts[label]
        assert res.counts(i) == Counts(o.nref, o.nsys, o.ntp), (i, t)
        assert _same_float(float(res.f_measure[i]), o_f[label])


# --------------------------------------------------------------------------- (c) invariants


def _boxes_of_clip(b: Boxes, i: int) -> list[tuple[int, int, float]]:
    m = b.clip == i
    return list(zip(b.start[m].tolist(), b.end[m].tolist(), b.confidence[m].tolist(), strict=True))


@property_settings(INVARIANT_EXAMPLES)
@given(data=st.data())
def test_detect_boxes_invariants(data: st.DataObject) -> None:
    sc = data.draw(score_curves(1, max_clips=5), label="curves")
    values, offsets, hop = sc.values[LABELS[0]], sc.offsets, sc.hop
    bs = data.draw(box_settings(hop), label="box setting")
    b = detect_boxes(values, offsets, hop, bs)
    n_clips = sc.n_clips
    lengths = np.diff(offsets)
    filtered = oracle.scipy_filtered(values, offsets, bs.median_filter_frames).astype(np.float64)

    assert b.n_clips == n_clips
    assert b.clip.dtype == b.start.dtype == b.end.dtype == np.int64 and b.confidence.dtype == np.float64
    # sorted by (clip, start), inside the clip, non-empty, non-overlapping
    order = np.lexsort((b.start, b.clip))
    assert np.array_equal(order, np.arange(len(b)))
    assert np.all((b.clip >= 0) & (b.clip < n_clips))
    assert np.all((b.start >= 0) & (b.start < b.end) & (b.end <= lengths[b.clip]))
    same = b.clip[1:] == b.clip[:-1]
    assert np.all(b.start[1:][same] >= b.end[:-1][same])
    # confidence: the max of the filtered curve over the box, or a mean: between the box's
    # min and max, and for a box that merged nothing (the span of a candidate box) its mean
    candidates = detect_boxes(values, offsets, hop, replace(bs, merge_abs=None, merge_rel=None))
    unmerged = set(
        zip(candidates.clip.tolist(), candidates.start.tolist(), candidates.end.tolist(), strict=True)
    )
    for c, s, e, conf in zip(b.clip, b.start, b.end, b.confidence, strict=True):
        inside = filtered[offsets[c] + s : offsets[c] + e]
        if bs.confidence == "max":
            assert conf == inside.max()
            continue
        assert inside.min() - MEAN_TOL <= conf <= inside.max() + MEAN_TOL
        if (c, s, e) in unmerged:
            assert abs(conf - math.fsum(inside.tolist()) / len(inside)) <= MEAN_TOL
    # per-clip independence: each clip alone, and the clips concatenated in another order
    perm = np.array(data.draw(st.permutations(range(n_clips)), label="clip order"), np.int64)
    permuted = ClassScores("x", values, offsets).take(perm)
    bp = detect_boxes(permuted.values, permuted.offsets, hop, bs)
    for new, old in enumerate(perm.tolist()):
        want = _boxes_of_clip(b, old)
        assert _boxes_of_clip(bp, new) == want, (old, new)
        x = sc.clip(LABELS[0], old)
        alone = detect_boxes(x, np.array([0, len(x)], np.int64), hop, bs)
        assert _boxes_of_clip(alone, 0) == want, old
    # the median filter is scipy's (reflect), applied before detection
    unfiltered = replace(bs, median_filter_frames=1)
    prefiltered = oracle.scipy_filtered(values, offsets, bs.median_filter_frames)
    pre = detect_boxes(prefiltered, offsets, hop, unfiltered)
    for f in ("clip", "start", "end", "confidence"):
        assert np.array_equal(getattr(pre, f), getattr(b, f)), f
    # merging only joins runs of consecutive candidate boxes ...
    _assert_coarsening(candidates, b)
    # ... and a larger criterion joins at least as much
    if bs.merge_abs is not None or bs.merge_rel is not None:
        wider = replace(
            bs,
            merge_abs=None if bs.merge_abs is None else 1.0,
            merge_rel=None if bs.merge_rel is None else bs.merge_rel * 2,
        )
        _assert_coarsening(b, detect_boxes(values, offsets, hop, wider))


def _assert_coarsening(fine: Boxes, coarse: Boxes) -> None:
    """Every coarse box is [first.start, last.end) of a run of consecutive fine boxes, and
    every fine box lies in exactly one coarse box."""
    for i in range(fine.n_clips):
        f = [(s, e) for s, e, _ in _boxes_of_clip(fine, i)]
        g = [(s, e) for s, e, _ in _boxes_of_clip(coarse, i)]
        starts = [s for s, _ in f]
        ends = [e for _, e in f]
        k = 0
        for s, e in g:
            assert k < len(f) and starts[k] == s, (i, f, g)
            while k < len(f) and ends[k] != e:
                k += 1
            assert k < len(f), (i, f, g)
            k += 1
        assert k == len(f), (i, f, g)


@property_settings(100)
@given(
    n=st.integers(1, MAX_FRAMES),
    level=st.floats(2**-10, 1.0, width=32),
    hop=st.sampled_from(HOPS),
    bs=st.sampled_from(HOPS).flatmap(box_settings),
)
def test_a_constant_clip_is_one_box(n: int, level: float, hop: float, bs: BoxSetting) -> None:
    # The curve steps up at the clip start and down at its end (0 outside) and nowhere else.
    x = np.full(n, level, np.float32)
    b = detect_boxes(x, np.array([0, n], np.int64), hop, bs)
    assert _boxes_of_clip(b, 0) == [(0, n, float(np.float32(level)))]
    assert len(detect_boxes(np.zeros(n, np.float32), np.array([0, n], np.int64), hop, bs)) == 0


# --------------------------------------------------------------------------- (d) inference API


@property_settings(API_EXAMPLES)
@given(data=st.data(), n_classes=st.integers(1, 3))
def test_clip_events_equal_the_score_set_path(data: st.DataObject, n_classes: int) -> None:
    sc = data.draw(score_curves(n_classes), label="curves")
    classes = list(sc.values)
    params: dict[str, ClassParams] = {}
    for c in classes:
        gap, min_dur = data.draw(clean_up(sc.hop), label="gap"), data.draw(clean_up(sc.hop), label="min")
        thr = data.draw(st.floats(0.01, 0.99), label="threshold")
        if data.draw(st.booleans(), label="boxes?"):
            bs = data.draw(box_settings(sc.hop), label="box setting")
            p = ClassParams(
                decoder="boxes",
                median_filter_frames=bs.median_filter_frames,
                step_filter_s=bs.step_filter_s,
                merge_abs=bs.merge_abs,
                merge_rel=bs.merge_rel,
                confidence=bs.confidence,
                threshold=thr,
                fill_gap_s=gap,
                min_duration_s=min_dur,
            )
        else:
            p = ClassParams(
                median_filter_frames=data.draw(st.sampled_from([1, 3, 5])),
                threshold=thr,
                fill_gap_s=gap,
                min_duration_s=min_dur,
            )
        params[c] = p.validate("generated")
    pf = ParamFile(sc.hop, params)
    names = sc.filenames
    durations = (
        None
        if sc.durations is None
        else {n: float(d) for n, d in zip(names, sc.durations.tolist(), strict=True) if not math.isnan(d)}
    )
    with tempfile.TemporaryDirectory() as tmp:
        with ScoreSetWriter(f"{tmp}/scores", classes, sc.hop, clips_per_shard=2) as w:
            for i, n in enumerate(names):
                w.add(n, np.stack([sc.clip(c, i) for c in classes], axis=1).reshape(-1, len(classes)))
        per_class, set_names = score_set_events(f"{tmp}/scores", pf, durations)
    assert set_names == names
    for i, n in enumerate(names):
        mat = np.stack([sc.clip(c, i) for c in classes], axis=1).reshape(-1, len(classes))
        dur = None if durations is None else durations.get(n)
        rows = clip_events(mat, classes, pf, sc.hop, dur)
        want = sorted(
            (
                (float(a), float(b), c)
                for c in classes
                for k, a, b in zip(
                    per_class[c].clip, per_class[c].onset_s, per_class[c].offset_s, strict=True
                )
                if k == i
            ),
            key=lambda r: (r[0], r[2], r[1]),
        )
        assert rows == want, n


def test_a_clean_step_through_the_whole_chain() -> None:
    # A fixed case through the whole chain (boxes -> events -> counts -> F) with known answers,
    # so that a failure of the generated cases can be told from a broken oracle.
    x = np.array([0, 0, 0, 0.9, 0.9, 0.9, 0.9, 0, 0, 0], np.float32)
    b = detect_boxes(x, np.array([0, 10], np.int64), 0.1, BoxSetting(1, 0.32, None, None))
    assert _boxes_of_clip(b, 0) == [(3, 7, float(np.float32(0.9)))]
    est = box_events(b, 0.5, 0.1, None)
    refs = ClassEvents.from_lists([0], [0.3], [0.7])
    assert event_counts(refs, est) == Counts(1, 1, 1)
    _, fs = sed_eval_event_counts(["a.wav"], ["Dog"], {"Dog": refs}, {"Dog": est})
    assert fs["Dog"] == class_f_measure(Counts(1, 1, 1)) == 1.0
    assert fs[MACRO_KEY] == macro_f_measure([1.0])
    assert len(box_events(b, float(np.float32(0.9)), 0.1, None)) == 0  # strict >


def test_a_staircase_gets_a_change_point_at_every_step() -> None:
    # 0, a 0.9 plateau (frames 4-9), a 0.5 shoulder (10-12), 0. With L = 2 frames the step
    # response is s[b] - s[b - 1]: maxima at boundaries 4 and 12 (the shoulder's last boundary
    # before its fall), minima at 10 and 13. One extremum per sign run would give one box
    # [4, 13) and could not cut the shoulder off.
    x = np.array([0] * 4 + [0.9] * 6 + [0.5] * 3 + [0] * 4, np.float32)
    hi, lo = float(np.float32(0.9)), float(np.float32(0.5))
    clip = np.array([0, len(x)], np.int64)
    b = detect_boxes(x, clip, 0.1, BoxSetting(1, 0.2, None, None))
    assert [(s, e) for s, e, _ in _boxes_of_clip(b, 0)] == [(4, 10), (12, 13)]
    assert np.allclose(b.confidence, [hi, lo], rtol=0, atol=1e-12)
    # The gap [10, 12) dips to 0.5: level 0.9 (the higher box mean) minus 0.5 is 0.4.
    assert len(detect_boxes(x, clip, 0.1, BoxSetting(1, 0.2, 0.3, None))) == 2
    for merge_abs, merge_rel in ((0.45, None), (None, 2.0)):
        m = detect_boxes(x, clip, 0.1, BoxSetting(1, 0.2, merge_abs, merge_rel))
        assert [(s, e) for s, e, _ in _boxes_of_clip(m, 0)] == [(4, 13)]
        # The merged box's mean is over its whole span, the gap included: (6 hi + 3 lo) / 9.
        assert abs(float(m.confidence[0]) - (6 * hi + 3 * lo) / 9) <= 1e-12
        peak = detect_boxes(x, clip, 0.1, BoxSetting(1, 0.2, merge_abs, merge_rel, "max"))
        assert float(peak.confidence[0]) == hi
