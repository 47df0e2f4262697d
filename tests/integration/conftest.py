"""Fixtures shared by the integration tests: one private local Ray per module, and the small
tuning problem built from a generated set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from envs.evaluator import MetricConfig
from envs.params import ClassParams
from envs.space import SearchSpace
from envs.synth import SynthResult
from service.problem import DataRef, TuningProblem


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A private local Ray (2 CPUs) for the module, unless one is already running in-process.

    ``address="local"`` starts a new instance even if another Ray runs on this machine.
    """
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def synth_problem(synth: SynthResult, space: SearchSpace, manual: ClassParams) -> TuningProblem:
    """Every clip of a generated set as tuning clips, ``manual`` for every class, 3 folds."""
    ref = DataRef(synth.scores_uri, synth.ground_truth_path, synth.durations_path, clips=None)
    manuals = {c: manual for c in synth.classes}
    return TuningProblem(ref, ref.load(), space, MetricConfig(), manuals, n_folds=3, seed=0)
