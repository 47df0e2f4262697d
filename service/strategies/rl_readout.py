"""The rl strategy's read-outs: the static table it starts from and the gate of its policy.

- :func:`static_part`: the table the residual policy changes. With budget for one threshold
  per setting at least, an exact sweep (:class:`~service.strategies.exact.ExactStrategy`, in
  this budget's accounting) and its robust selection (:func:`envs.selection.select_robust`,
  the runner's default rule, so it is the job's ``rl/robust`` row); below that, the manual
  setting. Its candidates are the strategy's candidates.
- :func:`gate`: the cross-fitted policy (every tuning clip decided by the network that never
  trained on it) against the table on the tuning clips, with a clip-level paired bootstrap.
  If the whole policy's macro-F gain is positive with probability ``confidence``, every class
  whose own gain is positive adapts; otherwise only the classes whose own gain is positive
  with that confidence (Bonferroni over the classes). So the job never recommends adaptation
  that did not win in cross-validation. (A cross-fitted
  network learned from fewer clips and a fifth of the samples of the ensemble that is
  applied, so the gate is conservative.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from envs.heldout import bootstrap_weights, clip_counts, clip_counts_of_events, macro_f, replicate_macro_f
from envs.metrics.fscore import f_measure
from envs.params import ClassParams
from envs.problem import TuningProblem, fold_counts
from envs.selection import Candidate, select_robust
from service.strategies.base import RunContext, StrategyResult, TrajectoryPoint
from service.strategies.exact import ExactStrategy
from service.strategies.rl_policy import AdaptivePolicy

LOG = logging.getLogger(__name__)
I64 = npt.NDArray[np.int64]


@dataclass
class StaticPart:
    """The static table and what it cost.

    Attributes:
        table: Per class, the table's entry (the robust selection of the sweep, or manual).
        naive: Per class, the best tuning-F entry evaluated.
        candidates: Per class, every evaluated setting with per-fold counts.
        trajectory: Best tuning macro F so far against evaluations.
        evaluations: Full-set evaluations spent.
        source: ``"exact sweep, N thresholds per setting"`` or ``"manual"``.
    """

    table: dict[str, ClassParams]
    naive: dict[str, ClassParams]
    candidates: dict[str, list[Candidate]]
    trajectory: list[TrajectoryPoint]
    evaluations: float
    source: str


def static_part(
    problem: TuningProblem, sweep_budget: float, seed: int, ctx: RunContext, count_manual: bool
) -> StaticPart:
    """The static table (see the module docstring).

    Args:
        problem: The tuning problem.
        sweep_budget: Full-set evaluations the sweep may take (exact's rule: floor(budget /
            settings) thresholds per setting).
        seed: Seed (exact is deterministic; passed on).
        ctx: Run context (its ``use_ray`` distributes the sweep; progress is reported).
        count_manual: Whether the manual table's evaluation counts (1) when there is no sweep.
    """
    n_settings = len(problem.space.settings)
    if sweep_budget >= n_settings:
        res = ExactStrategy().run(problem, math.floor(sweep_budget + 1e-9), seed, ctx)
        source = f"exact sweep, {res.info['thresholds_per_setting']} thresholds per setting"
        return StaticPart(_robust(res), dict(res.naive), res.candidates, list(res.trajectory),
                          res.evaluations, source)
    counts = fold_counts(problem.evaluator, problem.manual, problem.folds, problem.n_folds)
    spent = 1.0 if count_manual else 0.0
    total = np.sum([v.sum(axis=0) for v in counts.values()], axis=0)
    f = float(np.nanmean([f_measure(*v.sum(axis=0)) for v in counts.values()])) if total[0] > 0 else math.nan
    ctx.progress(spent)
    return StaticPart(
        dict(problem.manual),
        dict(problem.manual),
        {c: [Candidate(problem.manual[c], counts[c])] for c in problem.classes},
        [TrajectoryPoint(spent, f, 0.0)],
        spent,
        "manual",
    )


def _robust(res: StrategyResult) -> dict[str, ClassParams]:
    """The runner's robust selection of a result's candidates (its default rule).

    The manual counts only feed shrinkage, which the default rule leaves off, so they are not
    evaluated here: zero counts stand in.
    """
    n_folds = next(iter(res.candidates.values()))[0].counts.shape[0]
    placeholder = {c: Candidate(cands[0].params, np.zeros((n_folds, 3), np.int64))
                   for c, cands in res.candidates.items()}
    table, _ = select_robust(res.candidates, placeholder)
    return table


@dataclass
class GateReport:
    """What the gate decided (F on the 0-1 scale; probabilities from the paired bootstrap).

    Attributes:
        adapt: Per class, whether it adapts.
        gain: Per class, cross-validated F of the policy minus the table's.
        p_gain: Per class, the bootstrap probability that that gain is positive.
        whole_gain: Cross-validated macro-F gain of the whole policy (every class adapting).
        p_whole: The bootstrap probability that the whole policy's gain is positive.
        macro_gain: Cross-validated macro-F gain of the gated policy over the table.
    """

    adapt: dict[str, bool]
    gain: dict[str, float]
    p_gain: dict[str, float]
    whole_gain: float
    p_whole: float
    macro_gain: float = 0.0

    def as_info(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"adapt": dict(self.adapt), "gain": dict(self.gain), "p_gain": dict(self.p_gain),
                "whole_gain": self.whole_gain, "p_whole": self.p_whole, "macro_gain": self.macro_gain,
                "adapted": [c for c, a in self.adapt.items() if a]}


def gate(
    problem: TuningProblem,
    policy: AdaptivePolicy,
    holdout: I64,
    table: Mapping[str, ClassParams],
    confidence: float,
    seed: int,
    n_boot: int = 1000,
) -> GateReport:
    """Adapt where the cross-fitted policy beats the table on the tuning clips (module docstring).

    Every tuning clip is decided by the network it was held out from (one evaluation of every
    class on every tuning clip) and compared with the table's counts on the same clip (the
    table is a candidate the static part evaluated). Clip-level paired bootstrap replicates
    (:func:`envs.heldout.bootstrap_weights`) give the probability that a gain is positive. A
    class adapts if its own cross-validated F gain is positive and either the whole policy's
    macro-F gain is positive with probability ``confidence`` or its own with probability
    ``1 - (1 - confidence) / C`` (Bonferroni over the C classes).

    Args:
        problem: The tuning problem (its clips and evaluator).
        policy: The trained policy (before gating).
        holdout: Per tuning clip, its held-out network.
        table: The static table.
        confidence: Probability a gain must be positive with.
        seed: Seed of the bootstrap.
        n_boot: Bootstrap replicates.
    """
    data = problem.tuning
    scores = [data.scores(c) for c in policy.classes]
    actions = policy.crossfit_actions(scores, data.frame_hop_s, holdout)
    events = policy.events_from_scores(dict(zip(policy.classes, scores, strict=True)), data.frame_hop_s,
                                       data.durations_s, actions)
    mine = clip_counts_of_events(problem.evaluator, events)
    theirs = clip_counts(problem.evaluator, table)
    weights = bootstrap_weights(len(data), n_boot, seed)
    whole = replicate_macro_f(mine, weights) - replicate_macro_f(theirs, weights)
    report = GateReport({}, {}, {}, float(np.nan_to_num(macro_f(mine) - macro_f(theirs), nan=0.0)),
                        float(np.mean(whole > 0)))
    adapt_all = report.whole_gain > 0 and report.p_whole >= confidence
    per_class = 1.0 - (1.0 - confidence) / len(policy.classes)
    for c in policy.classes:
        diff = f_measure(*mine[c].sum(axis=0)) - f_measure(*theirs[c].sum(axis=0))
        gain = float(np.nan_to_num(diff, nan=0.0))
        reps = _class_f(weights @ mine[c]) - _class_f(weights @ theirs[c])
        p = float(np.mean(np.nan_to_num(reps, nan=0.0) > 0))
        report.adapt[c] = gain > 0 and (adapt_all or p >= per_class)
        report.gain[c], report.p_gain[c] = gain, p
    report.macro_gain = float(np.mean([report.gain[c] if report.adapt[c] else 0.0 for c in policy.classes]))
    return report


def _class_f(totals: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Class F of bootstrap replicates' totals (n_boot, 3)."""
    return f_measure(totals[:, 0], totals[:, 1], totals[:, 2])
