"""Manual and exact strategies (in-process) under the strategy contract."""

from __future__ import annotations

import pytest

from envs.evaluator import MetricConfig
from envs.params import ClassParams
from envs.problem import DataRef, TuningProblem
from envs.space import SearchSpace
from envs.synth import generate
from envs.synth_config import SynthConfig
from service.strategies.exact import ExactStrategy
from service.strategies.manual import ManualStrategy
from tests.contract.strategy_contract import StrategyContract


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    res = generate(str(out), SynthConfig(n_clips=60, n_classes=3, seed=3))
    return res


@pytest.fixture
def problem(synth_set):
    ref = DataRef(synth_set.scores_uri, synth_set.ground_truth_path, synth_set.durations_path)
    space = SearchSpace(kernels=(1, 3, 5), threshold_low=0.05, threshold_high=0.95)
    manual = {c: ClassParams(median_filter_frames=7, threshold=0.5) for c in synth_set.classes}
    return TuningProblem(ref, ref.load(), space, MetricConfig(), manual, n_folds=3, seed=0)


class TestManualContract(StrategyContract):
    budget = None

    def make(self):
        return ManualStrategy()


class TestExactContract(StrategyContract):
    budget = 12.0

    def make(self):
        return ExactStrategy()


class TestExactUnbudgetedContract(StrategyContract):
    budget = None

    def make(self):
        return ExactStrategy()
