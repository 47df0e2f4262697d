"""The contract every strategy passes (optuna-style: subclass and provide ``make``).

A strategy must return a valid parameter file for the problem's classes, respect its budget,
be deterministic for a seed, never end below its own first evaluation, accept the budget it is
run with by its own rule (``Options.budget_error``), and declare read-outs (``readouts``,
``policies``) that cover the problem's classes.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from envs.params import ParamFile
from envs.problem import TuningProblem
from service.strategies.base import RunContext, Strategy, StrategyResult, evaluate_joint
from service.strategies.options import StrategyOptions


class StrategyContract:
    """Subclass, set ``budget`` and implement ``make`` and the ``problem`` fixture."""

    budget: float | None = 12.0
    use_ray: bool = False

    def make(self) -> Strategy:
        raise NotImplementedError

    def _run(self, problem: TuningProblem, tmp_path, seed: int = 0) -> StrategyResult:
        ctx = RunContext(str(tmp_path / f"work-{seed}"), use_ray=self.use_ray)
        return self.make().run(problem, self.budget, seed, ctx)

    @pytest.fixture
    def result(self, problem, tmp_path) -> StrategyResult:
        return self._run(problem, tmp_path)

    def test_returns_valid_params_for_every_class(self, problem, result, tmp_path):
        assert set(result.naive) == set(problem.classes)
        pf = ParamFile(problem.tuning.frame_hop_s, dict(result.naive))
        pf.save(str(tmp_path / "p.json"))
        from envs.params import load_params

        loaded = load_params(str(tmp_path / "p.json"))
        loaded.check_classes(problem.classes, "result")
        for c, p in result.naive.items():
            p.validate(c)
            assert problem.space.contains(p) or p == problem.manual[c], (c, p)
        for c in problem.classes:
            assert result.candidates[c], c

    def test_respects_budget(self, result):
        if self.budget is not None:
            assert result.evaluations <= self.budget + 1e-9
        assert result.evaluations > 0
        assert result.trajectory[-1].evaluations <= result.evaluations + 1e-9

    def test_deterministic_for_a_seed(self, problem, result, tmp_path):
        again = self._run(problem, tmp_path / "again")
        assert again.naive == result.naive
        assert [p.best_f for p in again.trajectory] == [p.best_f for p in result.trajectory]

    def test_never_worse_than_its_first_evaluation(self, problem, result):
        best = [p.best_f for p in result.trajectory]
        assert all(b >= a - 1e-12 for a, b in itertools.pairwise(best))
        final_f, _ = evaluate_joint(problem, dict(result.naive))
        assert final_f >= best[0] - 1e-9
        assert math.isclose(final_f, best[-1], rel_tol=0, abs_tol=1e-9) or final_f >= best[-1]

    def test_trajectory_is_monotone_in_evaluations(self, result):
        ev = np.array([p.evaluations for p in result.trajectory])
        assert np.all(np.diff(ev) > 0)

    def test_its_options_accept_the_budget(self, problem):
        strategy = self.make()
        assert isinstance(strategy.options, type(strategy).Options)
        assert isinstance(strategy.options, StrategyOptions)
        assert strategy.options.budget_error(self.budget, len(problem.space.settings)) is None

    def test_declared_readouts_cover_every_class(self, problem, result):
        for name, table in result.readouts.items():
            assert list(table) == list(problem.classes), name
            for c, p in table.items():
                p.validate(c)
        for name, policy in result.policies.items():
            events = policy.events(problem.tuning)
            assert list(events) == list(problem.classes), name
