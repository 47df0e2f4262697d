"""The rl strategy: a static table, and PPO (Ray RLlib, new API stack) learning per-clip changes to it.

A static per-class table cannot beat exact: exact is the optimum on the grid. What only RL can
give is parameters chosen per clip from what the clip looks like, so the run has two parts:

1. **Static table** (:func:`~service.strategies.rl_readout.static_part`): an exact sweep with
   ``static_share`` of the budget and its robust selection (the manual setting when the budget
   cannot give every setting one threshold). Its candidates are the result's, so ``rl/naive``
   and ``rl/robust`` are what that sweep supports.
2. **Residual policy**: PPO on replicas of :class:`envs.gym_env.ResidualEnv`. Each step is one
   (clip, class): the agent keeps the table's entry, moves its threshold by logit steps, or
   switches to one of the class's alternative settings (:class:`envs.action_grid.ResidualGrid`),
   and is paid the change of that class's F relative to the table. The untrained networks take
   the table on every clip, so training can only add what adapts. ``cv_nets`` networks are
   cross-fitted over the tuning folds; the gate (:func:`~service.strategies.rl_readout.gate`)
   scores every tuning clip with the network that never trained on it and keeps adaptation
   only where it beats the table with bootstrap probability ``gate_confidence`` (the whole
   policy, or else single classes). The others keep the table, and ``info["gate"]`` says which
   and by how much.

Budget (full-set evaluations). The sweep costs what exact's accounting says (settings x
thresholds per setting); one env step decides one class on one clip, ``1 / (N C)`` for N tuning
clips and C classes; the gate's cross-fitted evaluation of every class on every tuning clip is
1 (with ``count_readouts``; also the manual table's evaluation when there is no sweep).
Training uses what the sweep leaves, in iterations of about ``train_batch_size`` steps.

Read-outs: ``naive`` (the sweep's best tuning F), the table as ``readouts["untrained"]``
(what the untrained policy does on every clip), and the policies ``adaptive`` (the gated,
trained policy; plain torch, :mod:`service.strategies.rl_policy`, saved as ``policy.pt`` +
``policy.json`` in the work directory, ``result.artifacts["policy"]``) and
``untrained_adaptive`` (the untrained networks, which act as the table).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from envs.action_grid import ResidualGrid, alternatives
from envs.problem import TuningProblem
from service.strategies.base import RunContext, Strategy, StrategyResult
from service.strategies.options import RLOptions
from service.strategies.rl_policy import AdaptivePolicy
from service.strategies.rl_readout import GateReport, StaticPart, gate, static_part
from service.strategies.rl_training import build_algorithm, env_steps, module_state, runner_nodes

LOG = logging.getLogger(__name__)


class RLStrategy(Strategy):
    """A static table by an exact sweep, then a cross-fitted residual PPO policy (module docstring)."""

    name = "rl"
    Options = RLOptions

    def run(self, problem: TuningProblem, budget: float | None, seed: int, ctx: RunContext) -> StrategyResult:
        """Sweep, train, gate; return the table's read-outs and both policies."""
        self.check_budget(budget, len(problem.space.settings))
        import ray

        opts: RLOptions = self.options  # type: ignore[assignment]
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        try:
            return _Run(problem, opts, seed, ctx).run(budget if budget is not None else opts.default_budget)
        finally:
            if started_ray:
                ray.shutdown()


class _Run:
    """One run: the static part, the training, the gate and the accounting."""

    def __init__(self, problem: TuningProblem, opts: RLOptions, seed: int, ctx: RunContext) -> None:
        self.problem, self.opts, self.seed, self.ctx = problem, opts, seed, ctx
        self.classes = problem.classes
        self.step_cost = 1.0 / (len(problem.tuning) * len(self.classes))
        self.n_nets = min(opts.cv_nets, problem.n_folds)
        # Clips of fold f are held out from network f mod n_nets.
        self.holdout = (problem.folds % self.n_nets).astype(np.int64)
        self.timing: dict[str, float] = {}
        self.steps = 0
        self.iterations = 0
        self.nodes: list[str] = []

    def run(self, budget: float) -> StrategyResult:
        """Everything, within ``budget`` full-set evaluations."""
        t0 = time.perf_counter()
        problem, opts = self.problem, self.opts
        torch.manual_seed(self.seed)
        part = static_part(problem, opts.static_share * budget, self.seed, self.ctx, opts.count_readouts)
        self.timing["static_s"] = time.perf_counter() - t0
        grid = ResidualGrid(
            tuple(alternatives(part.candidates[c], part.table[c], opts.alternatives) for c in self.classes),
            opts.offset_step_logit,
            opts.max_offset,
            problem.space.threshold_low,
            problem.space.threshold_high,
        )
        policy = AdaptivePolicy.create(grid, self.classes, self.n_nets, opts.hidden, opts.prior_logit)
        untrained = copy.deepcopy(policy)
        gate_cost = 1.0 if opts.count_readouts else 0.0
        steps_left = math.floor((budget - part.evaluations - gate_cost) / self.step_cost + 1e-6)
        report: GateReport | None = None
        if self._trainable(steps_left):
            self._train(policy, grid, part, steps_left)
            t = time.perf_counter()
            report = gate(problem, policy, self.holdout, part.table, opts.gate_confidence, self.seed)
            policy.adapt = [report.adapt[c] for c in self.classes]
            self.timing["gate_s"] = time.perf_counter() - t
        else:
            # No budget to learn anything: the policy stays the table.
            policy.adapt = [False] * len(self.classes)
        spent = part.evaluations + self.steps * self.step_cost + (gate_cost if report is not None else 0.0)
        self.ctx.progress(spent)
        return self._result(part, policy, untrained, report, spent, t0)

    def _trainable(self, steps: int) -> bool:
        """Whether ``steps`` env steps make one training batch of every sampler at least."""
        samplers = self.opts.num_envs_per_env_runner * max(1, self.opts.num_env_runners)
        return steps >= 2 * samplers * len(self.classes)

    def _train(self, policy: AdaptivePolicy, grid: ResidualGrid, part: StaticPart, steps_left: int) -> None:
        """PPO until the next iteration could exceed ``steps_left`` env steps; load the weights."""
        opts = self.opts
        threads = torch.get_num_threads()
        torch.set_num_threads(opts.learner_threads)
        samplers = opts.num_envs_per_env_runner * max(1, opts.num_env_runners)
        n_iter = max(1, round(steps_left / opts.train_batch_size))
        if opts.max_iterations is not None:
            n_iter = min(n_iter, opts.max_iterations)
        # A sample call may overshoot its batch by up to one step of every sampler.
        batch = max(samplers, (steps_left - n_iter * samplers) // n_iter)
        if opts.max_iterations is not None:
            batch = min(batch, max(samplers, opts.train_batch_size))
        try:
            t = time.perf_counter()
            algo: Any = build_algorithm(self.problem, opts, self.seed, grid, self.holdout, self.n_nets, batch)
            self.timing["build_s"] = time.perf_counter() - t
            t = time.perf_counter()
            timers: dict[str, float] = {"sample_s": 0.0, "learn_s": 0.0}
            try:
                last = batch + samplers
                while self.iterations < n_iter and self.steps + last <= steps_left:
                    result = algo.train()
                    self.iterations += 1
                    now = env_steps(result)
                    last, self.steps = max(now - self.steps, 1), now
                    _add_timers(timers, result)
                    self.ctx.progress(self.steps * self.step_cost + part.evaluations)
                    LOG.info("rl iteration %d: %d env steps", self.iterations, self.steps)
                policy.load_rllib_state(module_state(algo))
                self.nodes = runner_nodes(algo)
            finally:
                algo.stop()
            self.timing["train_s"] = time.perf_counter() - t
            self.timing.update(timers)
        finally:
            torch.set_num_threads(threads)

    def _result(
        self,
        part: StaticPart,
        policy: AdaptivePolicy,
        untrained: AdaptivePolicy,
        report: GateReport | None,
        spent: float,
        t0: float,
    ) -> StrategyResult:
        """The static read-outs and both policies (the trained one saved to the work directory)."""
        hop = self.problem.tuning.frame_hop_s
        os.makedirs(self.ctx.workdir, exist_ok=True)
        path = os.path.join(self.ctx.workdir, "policy.pt")
        t = time.perf_counter()
        policy.save(path, hop)
        untrained.frame_hop_s = hop
        self.timing["save_s"] = time.perf_counter() - t
        self.timing["total_s"] = time.perf_counter() - t0
        if report is None:
            verdict = "untrained: no budget left for training; the policy is the static table"
        elif any(report.adapt.values()):
            verdict = f"adapts {sum(report.adapt.values())} of {len(self.classes)} classes (cross-validated)"
        else:
            verdict = "no class's adaptation won in cross-validation; the policy is the static table"
        return StrategyResult(
            strategy=RLStrategy.name,
            naive=dict(part.naive),
            candidates=part.candidates,
            trajectory=list(part.trajectory),
            evaluations=spent,
            wall_s=time.perf_counter() - t0,
            artifacts={"policy": path},
            readouts={"untrained": dict(part.table)},
            policies={"adaptive": policy, "untrained_adaptive": untrained},
            info={
                "static": part.source,
                "static_evaluations": part.evaluations,
                "adaptive": verdict,
                "gate": None if report is None else report.as_info(),
                "nets": self.n_nets,
                "actions": policy.grid.n_actions,
                "iterations": self.iterations,
                "env_steps": self.steps,
                "env_step_evaluations": self.steps * self.step_cost,
                "nodes": self.nodes,
                "timing_s": dict(self.timing),
                "options": self.opts.model_dump(),
            },
        )


def _add_timers(acc: dict[str, float], result: Mapping[str, Any]) -> None:
    """Add an iteration's sampling and learner seconds (RLlib's ``timers``) to ``acc``."""
    timers = result.get("timers", {})
    acc["sample_s"] += float(timers.get("env_runner_sampling_timer", 0.0))
    acc["learn_s"] += float(timers.get("learner_update_timer", 0.0))
