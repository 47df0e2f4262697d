"""The strategy interface: a tuning problem in, a result out.

Every strategy (manual, exact, random, bayes, rl) implements :class:`Strategy`. Budgets are
counted in *full-set evaluations*: one evaluation of every class on every tuning clip counts
1; evaluating one candidate for every class at once counts 1; an RL episode over n of the N
tuning clips counts n / N. A result carries

- ``naive``: the parameters with the best tuning macro F among what the strategy evaluated
  (what a plain search reports);
- ``candidates``: per class, every per-class setting it evaluated with its counts per
  cross-validation fold of the tuning clips, from which :mod:`envs.selection` makes the
  robust recommendation;
- ``trajectory``: best tuning macro F so far against evaluations spent;
- optionally, read-outs of its own that the runner scores beside ``naive`` and ``robust``:
  further static tables (``readouts``, e.g. rl's untrained policy's table) and clip-adaptive
  policies (``policies``).

A strategy's options are a model of :mod:`service.strategies.options` (no Ray or torch), which
also holds its budget rule.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from envs.errors import SedtuneInputError
from envs.evalset import EvalSet
from envs.events import ClassEvents
from envs.params import ClassParams
from envs.problem import TuningProblem
from envs.selection import Candidate
from service.strategies.options import StrategyOptions


@dataclass(frozen=True)
class TrajectoryPoint:
    """One point of the F curve.

    Attributes:
        evaluations: Full-set evaluations spent so far.
        best_f: Best tuning macro F so far.
        wall_s: Seconds since the strategy started.
    """

    evaluations: float
    best_f: float
    wall_s: float


class Trajectory:
    """Records best-so-far tuning macro F against evaluations spent."""

    def __init__(self) -> None:
        self.points: list[TrajectoryPoint] = []
        self.best = -np.inf
        self._t0 = time.perf_counter()

    def add(self, evaluations: float, f: float, wall_s: float | None = None) -> bool:
        """Record an evaluation result; returns True if it is a new best.

        Args:
            evaluations: Full-set evaluations spent so far.
            f: The tuning macro F just measured (NaN if the evaluation failed).
            wall_s: Seconds at which it was measured (default: now, since the start).
        """
        improved = bool(np.isfinite(f) and f > self.best)
        if improved:
            self.best = f
        best = self.best if np.isfinite(self.best) else float("nan")
        t = time.perf_counter() - self._t0 if wall_s is None else wall_s
        self.points.append(TrajectoryPoint(float(evaluations), float(best), float(t)))
        return improved


class ClipPolicy(Protocol):
    """A clip-adaptive read-out: per class, events from settings chosen clip by clip."""

    def events(self, evalset: EvalSet) -> Mapping[str, ClassEvents]:
        """Per class, the events over ``evalset``'s clips."""


@dataclass
class StrategyResult:
    """What a strategy found and how.

    Attributes:
        strategy: Strategy name.
        naive: Best-tuning-F parameters per class.
        candidates: Per class, the evaluated settings with per-fold counts.
        trajectory: Best tuning macro F so far against evaluations.
        evaluations: Full-set evaluations spent.
        wall_s: Wall-clock seconds.
        artifacts: Named files the strategy produced (e.g. ``policy``: a checkpoint file).
        readouts: Further static tables by row name (e.g. rl's ``untrained``), scored by the
            runner after ``naive`` and ``robust``, in this order.
        policies: Clip-adaptive read-outs by row name (e.g. rl's ``adaptive`` and
            ``untrained_adaptive``), scored by the runner after the static tables, in this order.
        info: Free-form details (e.g. settings swept, trials, episodes).
    """

    strategy: str
    naive: dict[str, ClassParams]
    candidates: dict[str, list[Candidate]]
    trajectory: list[TrajectoryPoint]
    evaluations: float
    wall_s: float
    artifacts: dict[str, str] = field(default_factory=dict)
    readouts: dict[str, dict[str, ClassParams]] = field(default_factory=dict)
    policies: dict[str, ClipPolicy] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[float], None]


@dataclass
class RunContext:
    """Run-time services a strategy may use.

    Attributes:
        workdir: Directory for the strategy's files (checkpoints).
        progress: Called with the evaluations spent so far. A callback that also shows the best
            tuning macro F so far (the CLI's live line) has a method ``best(f)``, which
            :meth:`report` calls.
        use_ray: Whether Ray is initialised and strategies should distribute work.
    """

    workdir: str
    progress: ProgressFn = lambda _: None
    use_ray: bool = True

    def report(self, evaluations: float, best_f: float | None = None) -> None:
        """Report the evaluations spent so far and, when known, the best tuning macro F so far.

        ``progress`` gets the evaluations as always; a finite ``best_f`` goes to
        ``progress.best`` first when the callback has one, and nowhere otherwise, so a
        strategy may call this instead of ``progress`` whoever runs it.

        Args:
            evaluations: Full-set evaluations spent so far.
            best_f: Best tuning macro F so far (None or NaN: not known).
        """
        if best_f is not None and np.isfinite(best_f):
            best = getattr(self.progress, "best", None)
            if callable(best):
                best(float(best_f))
        self.progress(evaluations)


class Strategy(ABC):
    """A search strategy.

    Subclasses set ``name`` and ``Options`` (their model in :mod:`service.strategies.options`,
    validated with the job spec) and implement :meth:`run`; ``robust_selection`` False makes
    the runner report the result as it is (one row, ``fixed``) instead of ``naive`` and the
    robust selection from its candidates.

    Args:
        options: Validated options (default: the defaults).
    """

    name: ClassVar[str]
    Options: ClassVar[type[StrategyOptions]]
    robust_selection: ClassVar[bool] = True

    def __init__(self, options: StrategyOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def check_budget(self, budget: float | None, n_settings: int) -> None:
        """Apply the options' budget rule (for callers that run a strategy without ``check_job``).

        Args:
            budget: Full-set evaluations allowed (None: the strategy's default).
            n_settings: Discrete settings per class of the problem's space.

        Raises:
            SedtuneInputError: The budget breaks the rule.
        """
        error = self.options.budget_error(budget, n_settings)
        if error is not None:
            raise SedtuneInputError(f"{self.name}: budget: {error}")

    @abstractmethod
    def run(self, problem: TuningProblem, budget: float | None, seed: int, ctx: RunContext) -> StrategyResult:
        """Search and return what was found.

        Args:
            problem: The tuning problem.
            budget: Full-set evaluations allowed (None: the strategy's natural size).
            seed: Seed for everything random.
            ctx: Run-time services.
        """


# Strategy classes by name, imported lazily so that pure code does not import Ray.
REGISTRY: dict[str, str] = {
    "manual": "service.strategies.manual:ManualStrategy",
    "exact": "service.strategies.exact:ExactStrategy",
    "random": "service.strategies.tune_search:RandomStrategy",
    "bayes": "service.strategies.tune_search:BayesStrategy",
    "rl": "service.strategies.rl:RLStrategy",
}


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under ``name``.

    Raises:
        KeyError: Unknown name.
    """
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def evaluate_joint(
    problem: TuningProblem, params: dict[str, ClassParams]
) -> tuple[float, dict[str, npt.NDArray[np.int64]]]:
    """Evaluate a full per-class configuration on the tuning clips (in this process).

    Returns:
        The tuning macro F and, per class, counts per fold (n_folds, 3).
    """
    from envs.problem import fold_counts, macro_from_counts

    counts = fold_counts(problem.evaluator, params, problem.folds, problem.n_folds)
    return macro_from_counts(counts), counts


def current_node() -> str:
    """The Ray node id of this process ("" outside Ray): where a strategy's work ran."""
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else ""
    except ImportError:  # pragma: no cover - Ray is a dependency of the service
        return ""
