"""The small tuning problems the integration tests build from generated sets."""

from __future__ import annotations

from envs.evaluator import MetricConfig
from envs.params import ClassParams
from envs.space import SearchSpace
from envs.synth import SynthResult
from service.problem import DataRef, TuningProblem


def synth_problem(synth: SynthResult, space: SearchSpace, manual: ClassParams) -> TuningProblem:
    """Every clip of a generated set as tuning clips, ``manual`` for every class, 3 folds."""
    ref = DataRef(synth.scores_uri, synth.ground_truth_path, synth.durations_path, clips=None)
    manuals = {c: manual for c in synth.classes}
    return TuningProblem(ref, ref.load(), space, MetricConfig(), manuals, n_folds=3, seed=0)
