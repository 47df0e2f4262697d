"""The manual strategy: a fixed setting, the reference everyone is measured against."""

from __future__ import annotations

import time

from envs.problem import TuningProblem
from envs.selection import Candidate
from service.strategies.base import RunContext, Strategy, StrategyResult, Trajectory, evaluate_joint
from service.strategies.options import ManualOptions


class ManualStrategy(Strategy):
    """Evaluates the problem's manual setting (default: threshold 0.5, 0.45 s median filter).

    It searches nothing by design: it costs one evaluation and is the yardstick for the
    gains of the others. Its result is reported as it is (row ``fixed``), without selection.
    """

    name = "manual"
    Options = ManualOptions
    robust_selection = False

    def run(self, problem: TuningProblem, budget: float | None, seed: int, ctx: RunContext) -> StrategyResult:
        """Evaluate the manual setting once."""
        t0 = time.perf_counter()
        params = dict(problem.manual)
        f, counts = evaluate_joint(problem, params)
        traj = Trajectory()
        traj.add(1.0, f)
        ctx.progress(1.0)
        cands = {c: [Candidate(params[c], counts[c])] for c in problem.classes}
        return StrategyResult(self.name, params, cands, traj.points, 1.0, time.perf_counter() - t0)
