"""The runner scores the read-outs a strategy declares, whatever its name.

``Strategy.robust_selection`` gives ``naive`` and ``robust`` rows (or one ``fixed`` row);
``StrategyResult.readouts`` (static tables) and ``StrategyResult.policies`` (clip-adaptive
policies) add rows in their order, scored like the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from envs.decoders import class_events
from envs.evalset import EvalSet
from envs.events import ClassEvents
from envs.params import ClassParams
from envs.problem import TuningProblem
from service.strategies.base import RunContext, Strategy, StrategyResult
from service.strategies.manual import ManualStrategy
from service.strategies.options import ManualOptions
from service.tuning.check import check_job
from service.tuning.runner import run_job
from service.tuning.spec import parse_spec

OTHER = ClassParams(median_filter_frames=1, threshold=0.3)


class _FixedPolicy:
    """A clip-adaptive policy that takes the same setting on every clip."""

    def __init__(self, params: Mapping[str, ClassParams]) -> None:
        self.params = dict(params)

    def events(self, evalset: EvalSet) -> dict[str, ClassEvents]:
        return {
            c: class_events(evalset.scores(c), self.params[c], evalset.frame_hop_s, evalset.durations_s)
            for c in evalset.classes
        }


class _Fixed(Strategy):
    """The manual setting, declaring a static table and two policies of its own."""

    name = "fixed-with-readouts"
    Options = ManualOptions
    robust_selection = False

    def run(self, problem: TuningProblem, budget: float | None, seed: int, ctx: RunContext) -> StrategyResult:
        res = ManualStrategy().run(problem, budget, seed, ctx)
        other = {c: OTHER for c in problem.classes}
        return dataclasses.replace(
            res,
            strategy=self.name,
            readouts={"other": other},
            policies={"as_other": _FixedPolicy(other), "as_manual": _FixedPolicy(problem.manual)},
        )


class _Selected(_Fixed):
    name = "selected-with-readouts"
    robust_selection = True


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    from envs.synth import generate
    from envs.synth_config import SynthConfig

    root = tmp_path_factory.mktemp("readouts")
    data = generate(str(root / "d"), SynthConfig(n_clips=40, n_classes=2, seed=1))
    spec = parse_spec({
        "name": "readouts",
        "data": {"scores": data.scores_uri, "ground_truth": data.ground_truth_path,
                 "durations": data.durations_path},
        "space": {"decoders": ["frames"], "kernels": [1, 3]},
        "strategies": [{"name": "manual"}],
        "heldout": {"splits": 2},
        "bootstrap": 100,
        "output": str(root / "out"),
    })
    job = check_job(spec)
    strategies = [
        ("manual", None, ManualStrategy()), ("fixed", None, _Fixed()), ("selected", None, _Selected())
    ]
    result = run_job(spec, use_ray=False, resolved=dataclasses.replace(job, strategies=strategies))
    return {r.key: r for r in result.rows}


def test_rows_follow_the_declared_readouts_in_order(rows) -> None:
    assert list(rows) == [
        "manual/fixed",
        "fixed-with-readouts/fixed",
        "fixed-with-readouts/other",
        "fixed-with-readouts/as_other",
        "fixed-with-readouts/as_manual",
        "selected-with-readouts/naive",
        "selected-with-readouts/robust",
        "selected-with-readouts/other",
        "selected-with-readouts/as_other",
        "selected-with-readouts/as_manual",
    ]
    assert rows["fixed-with-readouts/other"].params is not None
    assert rows["fixed-with-readouts/as_other"].params is None  # a policy has no table


def test_a_policy_is_scored_like_the_table_it_applies(rows) -> None:
    for a, b in (("fixed", "as_manual"), ("other", "as_other")):
        table, policy = rows[f"fixed-with-readouts/{a}"], rows[f"fixed-with-readouts/{b}"]
        assert policy.heldout_f_mean == pytest.approx(table.heldout_f_mean, abs=1e-12)
        assert policy.tuning_f_mean == pytest.approx(table.tuning_f_mean, abs=1e-12)
    manual = rows["manual/fixed"].heldout_f_mean
    assert rows["fixed-with-readouts/fixed"].heldout_f_mean == pytest.approx(manual, abs=1e-12)
