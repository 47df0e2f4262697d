"""The rl strategy: PPO (Ray RLlib, new API stack) on replicas of the post-processing env.

The environment (:class:`envs.gym_env.PostProcessingEnv`) shows one clip per step, takes
every class's (setting, threshold) for that clip (a setting of ``space.settings``: a
``frames`` kernel or a ``boxes`` setting, with gap filling and minimum duration; see
:class:`envs.action_grid.ActionGrid`) and pays the clip's marginal macro F1; with
discount 1 (the default here) an episode's return is its macro F1 exactly, which fixes the
credit assignment of the paper's setup (one end-of-pass reward, discounted by 0.99 per clip).
The replicas, the RLlib module and the algorithm are built by :mod:`service.strategies.rl_training`;
this module trains, reads out and accounts.

Budget. An env step is one clip: ``steps / N`` full-set evaluations for N tuning clips.
Read-outs evaluate per-class settings on the tuning clips, ``1 / C`` evaluation each (each
setting once; ``count_readouts``), and the clip-adaptive policy, 1 evaluation each. Training
stops before the next iteration and its read-outs could exceed the budget; the untrained
policy's read-outs must fit (:meth:`service.strategies.options.RLOptions.budget_error`).

Read-outs (both produced):

- *static table* (what the other strategies produce): after every iteration the greedy
  policy acts on every tuning clip; per class, of the ``static_top_k`` settings it picks most
  often, the one with the best tuning F (:func:`~service.strategies.rl_readout.static_table`;
  ``static_top_k = 1`` is the plain mode). The best table over the iterations is ``naive``;
  every evaluated per-class setting is a ``candidate`` (with per-fold counts) for robust
  selection; the first iteration's table, that of the untrained policy, is the read-out
  ``untrained`` (``result.readouts``).
- *clip-adaptive policy* (``result.policies["adaptive"]``, the untrained one as
  ``"untrained_adaptive"``): :class:`~service.strategies.rl_policy.AdaptivePolicy`, the
  policy of the best iteration applied clip by clip; plain torch (``rl_policy.py``), saved as
  ``policy.pt`` + ``policy.json`` in the work directory (``result.artifacts["policy"]``), so
  inference needs no Ray.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from envs.action_grid import ActionGrid
from envs.params import ClassParams
from envs.problem import TuningProblem
from service.strategies.base import RunContext, Strategy, StrategyResult, Trajectory
from service.strategies.options import RLOptions
from service.strategies.rl_policy import AdaptivePolicy
from service.strategies.rl_readout import CountCache, static_table
from service.strategies.rl_training import build_algorithm, env_steps, module_state, runner_nodes

LOG = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the strategy


@dataclass
class _Readout:
    """The static read-out of the greedy policy after one training iteration."""

    iteration: int
    env_steps: int
    f: float
    mode_f: float
    params: dict[str, ClassParams]


@dataclass
class _AdaptiveReadout:
    """The clip-adaptive policy after one training iteration and its tuning macro F."""

    iteration: int
    f: float
    weights: dict[str, torch.Tensor] = field(repr=False)


class RLStrategy(Strategy):
    """PPO over replicas of the post-processing environment (see the module docstring)."""

    name = "rl"
    Options = RLOptions

    def run(self, problem: TuningProblem, budget: float | None, seed: int, ctx: RunContext) -> StrategyResult:
        """Train, read out after every iteration, keep the best static table and its policy."""
        self.check_budget(budget, len(problem.space.settings))
        import ray

        opts: RLOptions = self.options  # type: ignore[assignment]
        t0 = time.perf_counter()
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        threads = torch.get_num_threads()
        torch.set_num_threads(opts.learner_threads)
        try:
            run = _Run(problem, opts, seed, ctx)
            return run.train(budget if budget is not None else opts.default_budget, t0)
        finally:
            torch.set_num_threads(threads)
            if started_ray:
                ray.shutdown()


class _Run:
    """One training run: the algorithm, the read-outs and the accounting."""

    def __init__(self, problem: TuningProblem, opts: RLOptions, seed: int, ctx: RunContext) -> None:
        torch.manual_seed(seed)
        self.problem, self.opts, self.seed, self.ctx = problem, opts, seed, ctx
        self.classes = problem.classes
        self.n_clips = len(problem.tuning)
        scores = [problem.tuning.scores(c) for c in self.classes]
        self.n_frames_max = int(max(np.diff(cs.offsets).max() for cs in scores))
        self.grid = ActionGrid.from_space(problem.space, len(self.classes))
        self.policy = AdaptivePolicy.create(
            self.grid, self.classes, self.n_frames_max, opts.hidden, opts.quantiles
        )
        self.scores = scores
        self.cache = CountCache(problem)
        self.trajectory = Trajectory()
        self.readouts: list[_Readout] = []
        self.adaptive: list[_AdaptiveReadout] = []
        self.steps = 0
        self.iteration = 0
        self.top_k = opts.static_top_k

    def spent(self) -> float:
        """Full-set evaluations so far: env steps / N, plus read-outs if counted."""
        readouts = self.cache.evaluations + len(self.adaptive)
        return self.steps / self.n_clips + (readouts if self.opts.count_readouts else 0.0)

    def adaptive_due(self, iteration: int) -> bool:
        """Whether the clip-adaptive policy is evaluated after ``iteration`` (0: untrained)."""
        return iteration % self.opts.adaptive_every == 0

    def train(self, budget: float, t0: float) -> StrategyResult:
        """Iterate until the next iteration (and its read-outs) would exceed the budget.

        Args:
            budget: Full-set evaluations, within the rule of :meth:`RLOptions.budget_error`.
            t0: ``time.perf_counter()`` at the start of the run.
        """
        opts = self.opts
        # One clip-adaptive evaluation (the untrained policy's, or after the last iteration) is
        # always kept in reserve.
        adaptive_cost = 1.0 if opts.count_readouts else 0.0
        # A read-out evaluates at most top_k new settings per class: top_k full-set evaluations;
        # the untrained policy's static table and clip-adaptive evaluation fit the budget.
        counted = min(opts.static_top_k, int(budget - adaptive_cost))
        self.top_k = counted if opts.count_readouts else opts.static_top_k
        readout_cost = float(self.top_k) if opts.count_readouts else 0.0
        algo: Any = build_algorithm(self.problem, opts, self.seed, self.n_frames_max, self.grid)
        last = opts.train_batch_size
        try:
            self.read_out(algo)  # the untrained policy
            while True:
                due = adaptive_cost if self.adaptive_due(self.iteration + 1) else 0.0
                step = last / self.n_clips + readout_cost + due
                if self.spent() + step + adaptive_cost > budget + 1e-9:
                    break
                if opts.max_iterations is not None and self.iteration >= opts.max_iterations:
                    break
                result = algo.train()
                self.iteration += 1
                now = env_steps(result)
                last, self.steps = max(now - self.steps, 1), now
                self.read_out(algo)
            if not self.adaptive or self.adaptive[-1].iteration != self.iteration:
                self.read_out_adaptive()
            self.nodes = runner_nodes(algo)
        finally:
            algo.stop()
        return self.result(t0)

    def read_out_adaptive(self) -> None:
        """Score the current clip-adaptive policy (already loaded) on the tuning clips."""
        from envs.heldout import clip_counts_of_events, macro_f

        problem = self.problem
        counts = clip_counts_of_events(problem.evaluator, self.policy.events(problem.tuning))
        weights = {k: v.clone() for k, v in self.policy.net.state_dict().items()}
        self.adaptive.append(_AdaptiveReadout(self.iteration, macro_f(counts), weights))
        LOG.info("rl iteration %d: clip-adaptive tuning F %.4f", self.iteration, self.adaptive[-1].f)

    def read_out(self, algo: Any) -> None:
        """Evaluate the current greedy policy's static table; record a trajectory point."""
        self.policy.load_rllib_state(module_state(algo))
        actions = self.policy.actions(self.scores)
        params, f, mode_f = static_table(actions, self.grid, self.classes, self.cache, self.top_k)
        if self.adaptive_due(self.iteration):
            self.read_out_adaptive()
        evaluations = self.spent()
        self.readouts.append(_Readout(self.iteration, self.steps, f, mode_f, params))
        self.trajectory.add(evaluations, f)
        self.ctx.progress(evaluations)
        LOG.info("rl iteration %d: %d clips, %.2f evaluations, static-table tuning F %.4f (mode table %.4f)",
                 self.iteration, self.steps, evaluations, f, mode_f)

    def result(self, t0: float) -> StrategyResult:
        """The best read-out's table and policy (saved to the work directory)."""
        problem, policy = self.problem, self.policy
        best = max(self.readouts, key=lambda r: (np.nan_to_num(r.f, nan=-1.0), -r.iteration))
        adaptive = max(self.adaptive, key=lambda r: (np.nan_to_num(r.f, nan=-1.0), -r.iteration))
        untrained = AdaptivePolicy.create(self.grid, self.classes, self.n_frames_max, self.opts.hidden,
                                          self.opts.quantiles)
        untrained.net.load_state_dict(self.adaptive[0].weights)
        untrained.frame_hop_s = problem.tuning.frame_hop_s
        policy.net.load_state_dict(adaptive.weights)
        os.makedirs(self.ctx.workdir, exist_ok=True)
        path = os.path.join(self.ctx.workdir, "policy.pt")
        policy.save(path, problem.tuning.frame_hop_s)
        first, last = self.readouts[0], self.readouts[-1]
        return StrategyResult(
            strategy=RLStrategy.name,
            naive=dict(best.params),
            candidates=self.cache.candidates(),
            trajectory=list(self.trajectory.points),
            evaluations=self.spent(),
            wall_s=time.perf_counter() - t0,
            artifacts={"policy": path},
            readouts={"untrained": dict(first.params)},
            policies={"adaptive": policy, "untrained_adaptive": untrained},
            info={
                "untrained_f": first.f,
                "nodes": getattr(self, "nodes", []),
                "best_iteration": best.iteration,
                "adaptive_iteration": adaptive.iteration,
                "adaptive_f": [[r.iteration, r.f] for r in self.adaptive],
                "iterations": last.iteration,
                "env_steps": last.env_steps,
                "readout_evaluations": self.cache.evaluations + len(self.adaptive),
                "mode_table_f": [r.mode_f for r in self.readouts],
                "options": self.opts.model_dump(),
            },
        )
