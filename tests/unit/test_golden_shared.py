"""Golden tests: sedtune against sed_eval 0.2.1 on the real DCASE sets in ../shared/data.

sed_eval runs in the test on the events sedtune decodes; per-class Nref, Nsys and Ntp must be
identical, and the macro F figures of ../shared/data/README.md must be reproduced.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.evalset import open_eval_set
from envs.evaluator import Evaluator, MetricConfig
from envs.metrics.counts import Counts
from envs.metrics.sed_eval_oracle import sed_eval_event_counts, sed_eval_segment_counts
from envs.params import ClassParams
from envs.sweep import sweep_class

README_AT_05 = {
    "dcase2020-baseline": 0.3401,
    "dcase2021-baseline-student": 0.3997,
    "dcase2021-baseline-teacher": 0.4197,
    "dcase2023-eval-sample": 0.4470,
}
README_BEST = {
    "dcase2020-baseline": 0.3728,
    "dcase2021-baseline-student": 0.4390,
    "dcase2021-baseline-teacher": 0.4472,
    "dcase2023-eval-sample": 0.6988,
}

# (label, per-class params factory, collars)
SETTINGS = [
    ("t0.3", ClassParams(threshold=0.3), (0.2, 0.2)),
    ("t0.5", ClassParams(threshold=0.5), (0.2, 0.2)),
    ("t0.7", ClassParams(threshold=0.7), (0.2, 0.2)),
    ("k7", ClassParams(median_filter_frames=7, threshold=0.5), (0.2, 0.2)),
    ("k21", ClassParams(median_filter_frames=21, threshold=0.4), (0.2, 0.2)),
    ("collar0.1/0.5", ClassParams(median_filter_frames=7, threshold=0.5), (0.1, 0.5)),
    (
        "hysteresis",
        ClassParams(median_filter_frames=3, threshold=0.6, threshold_off=0.3),
        (0.2, 0.2),
    ),
    ("gaps", ClassParams(median_filter_frames=1, threshold=0.4, fill_gap_s=0.3), (0.2, 0.2)),
    (
        "min-duration",
        ClassParams(median_filter_frames=5, threshold=0.5, min_duration_s=0.25),
        (0.2, 0.2),
    ),
    (
        "all-stages",
        ClassParams(
            median_filter_frames=9,
            threshold=0.55,
            threshold_off=0.35,
            fill_gap_s=0.2,
            min_duration_s=0.15,
        ),
        (0.1, 0.5),
    ),
]


def _mixed(classes: list[str]) -> dict[str, ClassParams]:
    """Different parameters per class (kernels 1..21, several thresholds)."""
    rng = np.random.default_rng(7)
    return {
        c: ClassParams(
            median_filter_frames=int(rng.choice([1, 3, 7, 11, 21])),
            threshold=float(rng.uniform(0.1, 0.9)),
            fill_gap_s=float(rng.choice([0.0, 0.2])),
            min_duration_s=float(rng.choice([0.0, 0.1])),
        )
        for c in classes
    }


def _compare(evaluator: Evaluator, params: dict[str, ClassParams]) -> None:
    data, m = evaluator.data, evaluator.metric
    events = {c: evaluator.events(c, params[c]) for c in data.classes}
    oracle, oracle_f = sed_eval_event_counts(
        data.filenames, data.classes, data.refs, events, m.t_collar_s, m.percentage_of_length
    )
    ours = evaluator.evaluate(params)
    for c in data.classes:
        o = oracle[c]
        assert ours.per_class[c].counts == Counts(o.nref, o.nsys, o.ntp), c
        f_ours, f_ref = ours.per_class[c].f_measure, oracle_f[c]
        assert (math.isnan(f_ours) and math.isnan(f_ref)) or f_ours == f_ref, c
    assert ours.macro_f == oracle_f["__macro__"]


@pytest.mark.parametrize("name", sorted(README_AT_05))
def test_readme_macro_f_at_half(shared_sets, name):
    s = shared_sets[name]
    ev = Evaluator(open_eval_set(s.scores, s.ground_truth, s.durations))
    params = {c: ClassParams(threshold=0.5) for c in ev.data.classes}
    assert round(ev.evaluate(params).macro_f, 4) == README_AT_05[name]


@pytest.mark.parametrize(
    "name", ["dcase2021-baseline-student", "dcase2023-eval-sample", "dcase2020-baseline"]
)
@pytest.mark.parametrize("label,params,collars", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_counts_equal_sed_eval(shared_sets, name, label, params, collars):
    s = shared_sets[name]
    metric = MetricConfig(t_collar_s=collars[0], percentage_of_length=collars[1])
    ev = Evaluator(open_eval_set(s.scores, s.ground_truth, s.durations), metric)
    _compare(ev, {c: params for c in ev.data.classes})


@pytest.mark.parametrize("name", sorted(README_AT_05))
def test_mixed_per_class_params_equal_sed_eval(shared_sets, name):
    s = shared_sets[name]
    ev = Evaluator(open_eval_set(s.scores, s.ground_truth, s.durations))
    _compare(ev, _mixed(ev.data.classes))


def test_without_durations_equal_sed_eval(shared_sets):
    s = shared_sets["dcase2020-baseline"]  # 157 frames x 0.06375 s overrun the 10 s clips
    ev = Evaluator(open_eval_set(s.scores, s.ground_truth))
    _compare(ev, _mixed(ev.data.classes))


@pytest.mark.parametrize("name", ["dcase2021-baseline-teacher", "dcase2023-eval-sample"])
def test_segment_counts_equal_sed_eval(shared_sets, name):
    s = shared_sets[name]
    ev = Evaluator(open_eval_set(s.scores, s.ground_truth, s.durations))
    params = _mixed(ev.data.classes)
    events = {c: ev.events(c, params[c]) for c in ev.data.classes}
    oracle, oracle_f = sed_eval_segment_counts(ev.data.filenames, ev.data.classes, ev.data.refs, events)
    ours = ev.evaluate_segments(params)
    for c in ev.data.classes:
        o = oracle[c]
        assert ours.per_class[c].counts == Counts(o.nref, o.nsys, o.ntp), c
    assert ours.macro_f == oracle_f["__macro__"]


@pytest.mark.parametrize("name", sorted(README_BEST))
def test_sweep_reproduces_best_per_class_threshold(shared_sets, name):
    s = shared_sets[name]
    ev = Evaluator(open_eval_set(s.scores, s.ground_truth, s.durations))
    best = {}
    for c in ev.data.classes:
        res = sweep_class(ev.levels(c, 1), ev.data.refs[c], ev.data.frame_hop_s, ev.data.durations_s)
        best[c] = res.best()
    macro = float(np.nanmean([f for _, f in best.values()]))
    assert round(macro, 4) == README_BEST[name]
    # The best thresholds, evaluated directly, give the same macro F.
    direct = ev.evaluate({c: ClassParams(threshold=t) for c, (t, _) in best.items()})
    assert direct.macro_f == pytest.approx(macro, abs=1e-12)


@pytest.mark.parametrize(
    "name,kernel,gap,min_dur",
    [
        ("dcase2023-eval-sample", 1, 0.0, 0.0),
        ("dcase2023-eval-sample", 7, 0.2, 0.1),
        ("dcase2021-baseline-student", 1, 0.0, 0.0),
        ("dcase2021-baseline-student", 11, 0.3, 0.2),
        ("dcase2020-baseline", 5, 0.0, 0.25),
    ],
)
def test_sweep_equals_direct_evaluation_at_every_threshold(shared_sets, name, kernel, gap, min_dur):
    s = shared_sets[name]
    ev = Evaluator(open_eval_set(s.scores, s.ground_truth, s.durations))
    classes = ev.data.classes if name == "dcase2023-eval-sample" else ev.data.classes[:3]
    for c in classes:
        res = sweep_class(
            ev.levels(c, kernel),
            ev.data.refs[c],
            ev.data.frame_hop_s,
            ev.data.durations_s,
            fill_gap_s=gap,
            min_duration_s=min_dur,
        )
        assert len(res.thresholds) > 1
        assert np.all((res.thresholds > 0) & (res.thresholds < 1))
        for i, t in enumerate(res.thresholds):
            p = ClassParams(
                median_filter_frames=kernel,
                threshold=float(t),
                fill_gap_s=gap,
                min_duration_s=min_dur,
            )
            assert ev.class_counts(c, p) == res.counts(i), (c, float(t))
