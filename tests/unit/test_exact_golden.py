"""Done-when: exact on dcase2020-baseline with all clips as tuning clips reaches the README optimum."""

from __future__ import annotations

import math

import numpy as np

from envs.evaluator import MetricConfig
from envs.metrics.sed_eval_oracle import sed_eval_event_counts
from envs.params import ClassParams
from envs.problem import DataRef, TuningProblem
from envs.space import SearchSpace
from service.strategies.base import RunContext
from service.strategies.exact import ExactStrategy


def _problem(s, kernels):
    ref = DataRef(s.scores, s.ground_truth, s.durations)
    space = SearchSpace(kernels=kernels, threshold_low=1e-6, threshold_high=1 - 1e-6)
    manual = {c: ClassParams(median_filter_frames=7, threshold=0.5) for c in ref.load().classes}
    return TuningProblem(ref, ref.load(), space, MetricConfig(), manual, n_folds=5, seed=0)


def test_exact_reaches_readme_optimum_and_sed_eval_agrees(shared_sets, tmp_path):
    s = shared_sets["dcase2020-baseline"]
    k1 = _problem(s, (1,))
    res1 = ExactStrategy().run(k1, None, 0, RunContext(str(tmp_path), use_ray=False))
    assert round(res1.trajectory[-1].best_f, 4) == 0.3728
    ev = k1.evaluator
    direct = ev.evaluate(res1.naive)
    assert round(direct.macro_f, 4) == 0.3728
    events = {c: ev.events(c, res1.naive[c]) for c in ev.data.classes}
    _, oracle_f = sed_eval_event_counts(ev.data.filenames, ev.data.classes, ev.data.refs, events, 0.2, 0.2)
    assert oracle_f["__macro__"] == direct.macro_f

    all_k = _problem(s, tuple(range(1, 22, 2)))
    res = ExactStrategy().run(all_k, None, 0, RunContext(str(tmp_path / "all"), use_ray=False))
    f_all = all_k.evaluator.evaluate(res.naive).macro_f
    assert f_all >= direct.macro_f
    assert math.isclose(f_all, res.trajectory[-1].best_f, abs_tol=1e-12)
    events = {c: all_k.evaluator.events(c, res.naive[c]) for c in ev.data.classes}
    _, oracle_f = sed_eval_event_counts(ev.data.filenames, ev.data.classes, ev.data.refs, events, 0.2, 0.2)
    assert oracle_f["__macro__"] == f_all
    assert np.all(np.diff([p.best_f for p in res.trajectory]) >= 0)
