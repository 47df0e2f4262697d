"""Golden tests of the ``boxes`` decoder: sedtune against sed_eval 0.2.1 on the real DCASE sets.

The box-detection rule (step filter, change points, merging; envs/boxes.py) may still change,
so no box position of real data is pinned here. What is pinned is everything around it, each
against an independent oracle:

- the events: the candidate boxes of :meth:`Evaluator.boxes` are thresholded, gap-filled,
  length-filtered and decoded by a plain-Python re-implementation of the documented rules
  (confidence > θ strictly, gaps shorter than ``fill_gap_s`` filled, events shorter than
  ``min_duration_s`` dropped, ``[start*h, end*h]`` clipped to the clip's duration), and the
  evaluator's events must be identical;
- the counts: sed_eval, run in the test on those events, must give the evaluator's per-class
  Nref, Nsys and Ntp (and F) exactly, at 12 box settings on every shared set and with mixed
  per-class decoders;
- the median filter before detection: ``scipy.ndimage.median_filter(mode="reflect")`` per clip;
- the sweep: :func:`envs.sweep.sweep_boxes` (and :func:`envs.sweep.sweep_class` for the frames
  grid) must equal direct evaluation at every threshold interval (its middle, its inclusive
  lower end and the largest float below its exclusive upper end) for every setting of the
  default job space, and its per-group counts must add up and equal
  :meth:`Evaluator.class_counts_by_group`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pytest

from envs.boxes import detect_boxes
from envs.evalset import open_eval_set
from envs.evaluator import ClassResult, Evaluator
from envs.events import ClassEvents
from envs.metrics.counts import Counts
from envs.metrics.sed_eval_oracle import MACRO_KEY, sed_eval_event_counts
from envs.params import BoxSetting, ClassParams
from envs.space import Setting
from envs.sweep import SweepResult, sweep_boxes, sweep_class
from service.tuning.spec import SpaceSpec
from tests.unit import box_oracles as oracle

SET_NAMES = (
    "dcase2020-baseline",
    "dcase2021-baseline-student",
    "dcase2021-baseline-teacher",
    "dcase2023-eval-sample",
)
T = TypeVar("T")
SMALL_SET = "dcase2023-eval-sample"  # 20 clips: every class at every setting
CLASSES_PER_SETTING = 4  # on the 1168-clip sets: 4 classes per setting, rotating


def bx(
    step_filter_s: float,
    threshold: float,
    merge_abs: float | None = None,
    merge_rel: float | None = None,
    confidence: str = "mean",
    k: int = 1,
    gap: float = 0.0,
    min_dur: float = 0.0,
) -> ClassParams:
    """Validated ``boxes`` parameters."""
    return ClassParams(
        decoder="boxes",
        median_filter_frames=k,
        step_filter_s=step_filter_s,
        merge_abs=merge_abs,
        merge_rel=merge_rel,
        confidence=confidence,
        threshold=threshold,
        fill_gap_s=gap,
        min_duration_s=min_dur,
    ).validate("test")


# (id, params): step filters 0.16..0.96 s, merge by abs / rel / both / none, mean and max
# confidence, kernels 1 and 5, gap filling and minimum duration, thresholds 0.15..0.8.
BOX_SETTINGS: list[tuple[str, ClassParams]] = [
    ("L0.16-nomerge-mean-t0.3", bx(0.16, 0.3)),
    ("L0.32-abs0.2-mean-t0.5", bx(0.32, 0.5, merge_abs=0.2)),
    ("L0.48-rel2-mean-t0.4", bx(0.48, 0.4, merge_rel=2.0)),
    ("L0.64-abs0.15-rel1.5-max-t0.6", bx(0.64, 0.6, merge_abs=0.15, merge_rel=1.5, confidence="max")),
    ("L0.96-abs0.3-max-t0.7", bx(0.96, 0.7, merge_abs=0.3, confidence="max")),
    ("k5-L0.32-rel3-mean-t0.35", bx(0.32, 0.35, merge_rel=3.0, k=5)),
    ("k5-L0.48-nomerge-max-t0.5-gap0.2", bx(0.48, 0.5, confidence="max", k=5, gap=0.2)),
    ("L0.64-rel2-mean-t0.25-min0.3", bx(0.64, 0.25, merge_rel=2.0, min_dur=0.3)),
    ("k5-L0.16-abs0.1-rel2-mean-t0.45-gap0.1-min0.1", bx(0.16, 0.45, 0.1, 2.0, k=5, gap=0.1, min_dur=0.1)),
    ("L0.32-nomerge-max-t0.8", bx(0.32, 0.8, confidence="max")),
    ("L0.48-abs0.2-mean-t0.15-gap0.3-min0.2", bx(0.48, 0.15, merge_abs=0.2, gap=0.3, min_dur=0.2)),
    ("k5-L0.96-rel1.5-max-t0.55", bx(0.96, 0.55, merge_rel=1.5, confidence="max", k=5)),
]

_EVALUATORS: dict[tuple[str, bool], Evaluator] = {}


@pytest.fixture(scope="module")
def evaluators(shared_sets):
    """One evaluator per shared set for the whole module (boxes and scores stay cached)."""

    def get(name: str, durations: bool = True) -> Evaluator:
        key = (name, durations)
        if key not in _EVALUATORS:
            s = shared_sets[name]
            _EVALUATORS[key] = Evaluator(
                open_eval_set(s.scores, s.ground_truth, s.durations if durations else None)
            )
        return _EVALUATORS[key]

    yield get
    _EVALUATORS.clear()


# --------------------------------------------------------------------------- oracles


def oracle_events(ev: Evaluator, label: str, p: ClassParams) -> ClassEvents:
    """The oracle's events of one class under either decoder (see tests/unit/box_oracles.py).

    Boxes are detected here from the class's scores, not taken from the evaluator's cache.
    """
    data = ev.data
    scores = data.scores(label)
    if p.decoder == "boxes":
        return oracle.box_events(
            detect_boxes(scores.values, scores.offsets, data.frame_hop_s, p.box_setting),
            p.threshold,
            data.frame_hop_s,
            data.durations_s,
            p.fill_gap_s,
            p.min_duration_s,
        )
    return oracle.frame_events(scores.values, scores.offsets, p, data.frame_hop_s, data.durations_s)


def assert_same_events(got: ClassEvents, want: ClassEvents, what: object) -> None:
    assert oracle.same_events(got, want), what


def compare_with_sed_eval(ev: Evaluator, params: dict[str, ClassParams], classes: Sequence[str]) -> None:
    """Evaluator events = oracle events, and evaluator counts = sed_eval counts on them."""
    data, m = ev.data, ev.metric
    events = {}
    for c in classes:
        want = oracle_events(ev, c, params[c])
        assert_same_events(ev.events(c, params[c]), want, c)
        events[c] = want
    counts, fs = sed_eval_event_counts(
        data.filenames, list(classes), data.refs, events, m.t_collar_s, m.percentage_of_length
    )
    for c in classes:
        o = counts[c]
        ours = ClassResult.of(ev.class_counts(c, params[c]))
        assert ours.counts == Counts(o.nref, o.nsys, o.ntp), c
        assert (math.isnan(ours.f_measure) and math.isnan(fs[c])) or ours.f_measure == fs[c], c
    if list(classes) == data.classes:
        assert ev.evaluate(params).macro_f == fs[MACRO_KEY]


def rotating_classes(classes: Sequence[T], j: int, k: int = CLASSES_PER_SETTING) -> list[T]:
    """The j-th window of k classes, wrapping: consecutive settings cover every class."""
    return [classes[(j * k + i) % len(classes)] for i in range(k)]


# --------------------------------------------------------------------------- settings


def test_box_settings_cover_the_documented_grid():
    ps = [p for _, p in BOX_SETTINGS]
    assert len(ps) >= 10
    assert {p.step_filter_s for p in ps} >= {0.16, 0.32, 0.48, 0.64, 0.96}
    merges = {(p.merge_abs is not None, p.merge_rel is not None) for p in ps}
    assert merges == {(False, False), (True, False), (False, True), (True, True)}
    assert {p.confidence for p in ps} == {"mean", "max"}
    assert {p.median_filter_frames for p in ps} == {1, 5}
    assert any(p.fill_gap_s > 0 for p in ps) and any(p.min_duration_s > 0 for p in ps)
    assert len({p.threshold for p in ps}) >= 5
    # The rotation puts every class of a 10-class set in at least one setting.
    seen = set(itertools.chain.from_iterable(rotating_classes(range(10), j) for j in range(len(ps))))
    assert seen == set(range(10))


# --------------------------------------------------------------------------- sed_eval


@pytest.mark.parametrize("name", SET_NAMES)
@pytest.mark.parametrize(
    ("j", "params"), list(enumerate(p for _, p in BOX_SETTINGS)), ids=[i for i, _ in BOX_SETTINGS]
)
def test_box_counts_equal_sed_eval(evaluators, name, j, params):
    ev = evaluators(name)
    classes = ev.data.classes if name == SMALL_SET else rotating_classes(ev.data.classes, j)
    compare_with_sed_eval(ev, {c: params for c in ev.data.classes}, classes)
    # not a comparison of empty outputs
    counts = [ev.class_counts(c, params) for c in classes]
    assert sum(x.nsys for x in counts) > 0 and sum(x.ntp for x in counts) > 0


def _mixed(classes: Sequence[str], seed: int) -> dict[str, ClassParams]:
    """Half the classes frames, half boxes, each with its own parameters."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, c in enumerate(classes):
        common = {
            "median_filter_frames": int(rng.choice([1, 3, 5, 9])),
            "threshold": float(np.round(rng.uniform(0.1, 0.9), 3)),
            "fill_gap_s": float(rng.choice([0.0, 0.0, 0.2])),
            "min_duration_s": float(rng.choice([0.0, 0.0, 0.15])),
        }
        if i % 2:
            merge = [(None, None), (0.2, None), (None, 2.0), (0.1, 3.0)][int(rng.integers(4))]
            out[c] = ClassParams(
                decoder="boxes",
                step_filter_s=float(rng.choice([0.16, 0.32, 0.48, 0.64, 0.96])),
                merge_abs=merge[0],
                merge_rel=merge[1],
                confidence=str(rng.choice(["mean", "max"])),
                **common,  # type: ignore[arg-type]
            ).validate("test")
        else:
            out[c] = ClassParams(**common).validate("test")  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("name", SET_NAMES)
def test_mixed_decoders_per_class_equal_sed_eval(evaluators, name):
    ev = evaluators(name)
    params = _mixed(ev.data.classes, seed=SET_NAMES.index(name))
    assert {p.decoder for p in params.values()} == {"frames", "boxes"}
    compare_with_sed_eval(ev, params, ev.data.classes)


def test_boxes_without_durations_equal_sed_eval(evaluators):
    # dcase2020-baseline: 157 frames x 0.06375 s = 10.01 s overrun the 10 s clips; without
    # durations the offsets are not clipped.
    ev = evaluators("dcase2020-baseline", durations=False)
    assert np.isnan(ev.data.durations_s).all()
    params = {c: p for c, (_, p) in zip(ev.data.classes, BOX_SETTINGS, strict=False)}
    compare_with_sed_eval(ev, params, ev.data.classes)


@pytest.mark.parametrize("name", SET_NAMES)
def test_median_filter_before_detection_is_scipy_reflect(evaluators, name):
    ev = evaluators(name)
    for _, p in BOX_SETTINGS:
        if p.median_filter_frames == 1:
            continue
        bs = p.box_setting
        for c in ev.data.classes[:3]:
            s = ev.data.scores(c)
            pre = oracle.scipy_filtered(s.values, s.offsets, bs.median_filter_frames)
            unfiltered = BoxSetting(1, bs.step_filter_s, bs.merge_abs, bs.merge_rel, bs.confidence)
            want = detect_boxes(pre, s.offsets, ev.data.frame_hop_s, unfiltered)
            got = ev.boxes(c, bs)
            assert ev.boxes(c, bs) is got  # cached per (class, box setting)
            for field in ("clip", "start", "end", "confidence"):
                assert np.array_equal(getattr(got, field), getattr(want, field)), (c, p, field)


# --------------------------------------------------------------------------- the sweeps

DEFAULT_SETTINGS: tuple[Setting, ...] = SpaceSpec().to_space().settings
N_FOLDS = 3
SWEEP_SUBSET_CLIPS = 240  # clips of a DESED set (quantized scores: few frame levels)


def _sweep(ev: Evaluator, label: str, s: Setting, groups: npt.NDArray[np.int64] | None) -> SweepResult:
    data, m = ev.data, ev.metric
    n_groups = 1 if groups is None else N_FOLDS
    args = (
        data.refs[label],
        data.frame_hop_s,
        data.durations_s,
        m.t_collar_s,
        m.percentage_of_length,
        s.fill_gap_s,
        s.min_duration_s,
        groups,
        n_groups,
    )
    if s.decoder == "boxes":
        return sweep_boxes(ev.boxes(label, s.box_setting), *args)
    return sweep_class(ev.levels(label, s.median_filter_frames), *args)


def probe_thresholds(res: SweepResult, i: int) -> list[float]:
    """The middle of interval i, its inclusive lower end and the largest float below its upper end."""
    out = [float(res.thresholds[i])]
    if np.isfinite(res.lower[i]):
        out.append(float(res.lower[i]))
    if np.isfinite(res.upper[i]):
        out.append(float(np.nextafter(res.upper[i], -np.inf)))
    return out


def check_sweep_against_direct(ev: Evaluator, s: Setting) -> int:
    """Every class: the sweep equals direct evaluation at every threshold; groups add up."""
    n = len(ev.data)
    groups = (np.arange(n, dtype=np.int64) * 7 + 3) % N_FOLDS
    checked = 0
    for c in ev.data.classes:
        res = _sweep(ev, c, s, None)
        grouped = _sweep(ev, c, s, groups)
        assert len(res.thresholds) >= 2, (c, s)
        # the intervals tile the thresholds (0, 1) without gaps
        assert res.lower[0] <= 0.0 and res.upper[-1] >= 1.0
        assert np.array_equal(res.upper[:-1], res.lower[1:])
        assert np.all((res.thresholds > 0) & (res.thresholds < 1))
        # a grouped sweep has the same totals, and its groups add up
        for f in ("thresholds", "ntp", "nsys"):
            assert np.array_equal(getattr(res, f), getattr(grouped, f)), (c, s, f)
        assert grouped.nref == res.nref == int(grouped.group_nref.sum())
        assert np.array_equal(grouped.group_ntp.sum(axis=0), grouped.ntp)
        assert np.array_equal(grouped.group_nsys.sum(axis=0), grouped.nsys)
        assert grouped.group_ntp.shape == grouped.group_nsys.shape == (N_FOLDS, len(res.thresholds))
        for i in range(len(res.thresholds)):
            for t in probe_thresholds(res, i):
                p = s.with_threshold(t)
                assert ev.class_counts(c, p) == res.counts(i), (c, s.label(), i, t)
                checked += 1
            mid = s.with_threshold(float(res.thresholds[i]))
            by_group = ev.class_counts_by_group(c, mid, groups, N_FOLDS)
            assert np.array_equal(by_group[:, 0], grouped.group_nref), (c, s.label(), i)
            assert np.array_equal(by_group[:, 1], grouped.group_nsys[:, i]), (c, s.label(), i)
            assert np.array_equal(by_group[:, 2], grouped.group_ntp[:, i]), (c, s.label(), i)
    return checked


def test_default_space_has_both_grids():
    decoders = [s.decoder for s in DEFAULT_SETTINGS]
    assert decoders.count("frames") >= 1 and decoders.count("boxes") >= 1


@pytest.fixture(scope="module")
def desed_subset(evaluators):
    """A seeded subset of the clips of dcase2021-baseline-student."""
    ev = evaluators("dcase2021-baseline-student")
    idx = np.sort(np.random.default_rng(2024).choice(len(ev.data), SWEEP_SUBSET_CLIPS, replace=False))
    return Evaluator(ev.data.subset(idx), ev.metric)


@pytest.mark.parametrize("setting", DEFAULT_SETTINGS, ids=[s.label() for s in DEFAULT_SETTINGS])
def test_default_space_sweep_equals_direct_evaluation(desed_subset, setting):
    assert check_sweep_against_direct(desed_subset, setting) > 0


@pytest.mark.parametrize(
    "setting",
    [s for s in DEFAULT_SETTINGS if s.decoder == "boxes"],
    ids=[s.label() for s in DEFAULT_SETTINGS if s.decoder == "boxes"],
)
def test_default_box_grid_sweep_equals_direct_on_raw_scores(evaluators, setting):
    # dcase2023-eval-sample: unquantized scores, every clip.
    assert check_sweep_against_direct(evaluators(SMALL_SET), setting) > 0


@pytest.mark.parametrize(
    ("j", "params"), list(enumerate(p for _, p in BOX_SETTINGS)), ids=[i for i, _ in BOX_SETTINGS]
)
def test_box_sweep_with_clean_up_equals_direct(evaluators, j, params):
    """The sweep with the golden settings' gap filling / minimum duration (not in the default grid)."""
    ev = evaluators(SMALL_SET)
    assert check_sweep_against_direct(ev, Setting.of(params)) > 0
