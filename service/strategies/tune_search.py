"""Random and Bayesian (Optuna TPE) search over the joint per-class space, on Ray Tune.

Both strategies search every class's parameters at once (the joint space of
:mod:`service.strategies.search_codec`). They ignore that the objective is separable: they are
the plain black-box baselines the exact strategy is measured against (DESIGN.md, "Search
strategies"). One trial (:mod:`service.strategies.tune_trial`) evaluates one joint
configuration on all tuning clips on a Ray worker; this module is the driver: it builds the
searcher, runs the Tuner, records every trial and turns them into a result.

Budget: one Tune trial is one full-set evaluation, so the budget is the number of trials
(``None`` -> 100), never more (rule: :meth:`service.strategies.options.TuneOptions.budget_error`).

Determinism: the result is built in trial-creation order, never completion order, and the
naive pick breaks ties by trial index. Random search draws every configuration from
``BasicVariantGenerator(random_state=seed)`` independently of results, so it is
deterministic at any concurrency. TPE's suggestions depend on which trials have completed
when it is asked, so :class:`BayesStrategy` runs one trial at a time by default; with
``max_concurrent_trials > 1`` it is faster on a cluster but no longer deterministic for a
seed (Optuna's default constant liar then keeps concurrent suggestions apart).

Concurrency (measured on a 2-core machine, 500-2000 clips x 10 classes): one trial at a
time was 1.5-3x faster than two (at 1 or 0.5 CPU each): the Tune controller needs a core,
and every extra actor warms its own median-filter cache. So random search's default
(``max_concurrent_trials=None``) runs ``(cluster CPUs - 1) / cpus_per_trial`` trials at once.

Ray is imported inside :meth:`_TuneStrategy.run` only: importing this module (job validation)
is cheap.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import uuid
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from envs.params import ClassParams
from envs.problem import TuningProblem
from envs.selection import Candidate
from envs.space import SearchSpace
from service.strategies.base import RunContext, Strategy, StrategyResult, Trajectory
from service.strategies.options import (
    SYSTEMATIC_FAILURES,
    BayesOptions,
    RandomOptions,
    StrategyOptions,
    TuneOptions,
)
from service.strategies.search_codec import ConditionalSpace, decode, encode, param_space
from service.strategies.tune_trial import TrialSetup, trainable
from service.strategies.warm_start import complete_params, warm_start_params

if TYPE_CHECKING:
    from ray.tune import Callback, Stopper
    from ray.tune.search import SearchAlgorithm, Searcher

LOG = logging.getLogger(__name__)

#: Trials when the job gives no budget.
DEFAULT_BUDGET = 100

_O = TypeVar("_O", bound=StrategyOptions)


def trial_budget(budget: float | None) -> int:
    """Trials for a budget in full-set evaluations (one trial = one evaluation; never more).

    Args:
        budget: Full-set evaluations, at least 1 (:meth:`TuneOptions.budget_error`); None:
            :data:`DEFAULT_BUDGET`.
    """
    if budget is None:
        return DEFAULT_BUDGET
    return math.floor(budget)


# --------------------------------------------------------------------------- the driver


@dataclass
class _TrialRecord:
    """One trial as the driver saw it."""

    config: dict[str, Any]
    f: float | None = None
    counts: list[list[list[int]]] | None = None
    error: str | None = None
    node: str = ""
    done_at: float = math.inf  # perf_counter() when the driver got the result or the failure


@dataclass
class _Trials:
    """Every trial's config and outcome, keyed by creation index (shared by callback and stopper)."""

    records: dict[int, _TrialRecord]
    retries: int = 0
    started_at: float = 0.0

    @property
    def n_failed(self) -> int:
        return sum(r.f is None for r in self.records.values())

    def systematic_failure(self) -> bool:
        done = [r for r in self.records.values() if r.f is not None or r.error is not None]
        return len(done) >= SYSTEMATIC_FAILURES and all(r.f is None for r in done)


def _collector(store: _Trials, report: Callable[[float, float | None], None]) -> Callback:
    """A Tune callback that fills ``store`` and reports progress (evaluations spent and the best
    tuning F so far, :meth:`RunContext.report`) as trials finish."""
    from ray.tune import Callback

    class Collector(Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            self._index: dict[str, int] = {}
            self._finished = 0
            self._best = -math.inf

        def _see(self, all_trials: list[Any]) -> None:
            # Index = order of creation. Tune appends a new trial to its list, but moves a
            # requeued (retried) one to the end, so positions are read only for unseen trials,
            # at every step: a trial is seen in the step that created it, before it can fail.
            for t in all_trials:
                if t.trial_id not in self._index:
                    self._index[t.trial_id] = len(self._index)
                    store.records[self._index[t.trial_id]] = _TrialRecord(config=dict(t.config))

        def _record(self, all_trials: list[Any], trial: Any) -> _TrialRecord:
            self._see(all_trials)
            return store.records[self._index[trial.trial_id]]

        def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
            self._see(trials)

        def _finish(self, f: float | None = None) -> None:
            self._finished += 1
            if f is not None and math.isfinite(f):
                self._best = max(self._best, f)
            report(float(self._finished), self._best if math.isfinite(self._best) else None)

        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
        ) -> None:
            rec = self._record(trials, trial)
            if "f" in result and rec.f is None:
                rec.f, rec.counts, rec.error = float(result["f"]), result["counts"], None
                rec.node = str(result.get("node", ""))
                rec.done_at = time.perf_counter()
                self._finish(rec.f)

        def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            store.retries += 1

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            rec = self._record(trials, trial)
            if rec.f is None and rec.error is None:
                rec.error = _error_text(trial)
                rec.done_at = time.perf_counter()
                self._finish(rec.f)

        def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
            self._see(trials)  # trials stopped before they reported still count as spent

    return Collector()


def _error_text(trial: Any) -> str:
    """The last line of a failed trial's traceback (the exception), else its error file's path."""
    path = trial.error_file  # written locally by Tune before on_trial_error; synced later
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except (OSError, TypeError):  # no file (TypeError: path None)
        lines = []
    return lines[-1] if lines else str(path or "unknown error")


def _stopper(store: _Trials) -> Stopper:
    """Stops the experiment on systematic failure (see :data:`SYSTEMATIC_FAILURES`)."""
    from ray.tune import Stopper

    class FailureStopper(Stopper):  # type: ignore[misc]
        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return store.systematic_failure()

    return FailureStopper()


#: Ray Tune's switch for its default per-trial loggers (read when ``Tuner.fit`` starts).
TUNE_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
#: The logger, and the start of its warning, that reports trials without those loggers' files.
TUNE_ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"
NO_METRIC_FILES = "Failed to fetch metrics for"


class _NoMetricFilesFilter(logging.Filter):
    """Drops Tune's warning that trials have no ``result.json`` / ``progress.csv``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(NO_METRIC_FILES)


@contextlib.contextmanager
def _without_tune_loggers() -> Iterator[None]:
    """Run ``Tuner.fit`` without Tune's default CSV, JSON and TensorBoard logger callbacks.

    They write ``progress.csv``, ``result.json`` and a TensorBoard event file into every trial's
    folder (a writer per trial). Every result already reaches :func:`_collector`, which keeps
    it in ``trials.<strategy>.json``, so those files were copies nobody read. They cost the
    driver about 22 ms a trial (median; 12-30 ms over six paired 40-trial experiments of a
    no-op trainable, 2 cores): 0.9 s of each of the demo's two Tune searches. Without them,
    the result grid ``Tuner.fit`` builds at its end warns that it found no metrics files (one
    line per trial in the job's log); that warning, the consequence of this choice, is
    dropped, and only it. The variable and the logger are restored afterwards.
    """
    before = os.environ.get(TUNE_LOGGERS_ENV)
    os.environ[TUNE_LOGGERS_ENV] = "1"
    quiet = _NoMetricFilesFilter()
    analysis = logging.getLogger(TUNE_ANALYSIS_LOGGER)
    analysis.addFilter(quiet)
    try:
        yield
    finally:
        analysis.removeFilter(quiet)
        if before is None:
            os.environ.pop(TUNE_LOGGERS_ENV, None)
        else:
            os.environ[TUNE_LOGGERS_ENV] = before


def _auto_concurrency(cpus_per_trial: float) -> int:
    """Trials at once that leave one CPU of the cluster to the Tune controller (at least 1)."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1.0))  # type: ignore[no-untyped-call]
    return max(1, int((cpus - 1.0) // cpus_per_trial))


class _TuneStrategy(Strategy):
    """Shared driver: build the space, run the Tuner, turn the trials into a result."""

    def _options_as(self, cls: type[_O]) -> _O:
        if not isinstance(self.options, cls):
            got = type(self.options).__name__
            raise TypeError(f"{self.name}: options must be {cls.__name__}, but got {got}")
        return self.options

    def _points(self, problem: TuningProblem) -> list[dict[str, ClassParams]]:
        """Configurations to evaluate first (none by default)."""
        return []

    @abstractmethod
    def _search(
        self, points: list[dict[str, Any]], seed: int, n_trials: int, space: SearchSpace, n_classes: int
    ) -> tuple[SearchAlgorithm | Searcher, int | None]:
        """The search algorithm and Tune's ``max_concurrent_trials`` for it.

        Args:
            points: Configurations to evaluate first (encoded, in the space).
            seed: Seed of the searcher.
            n_trials: Number of trials.
            space: The per-class space.
            n_classes: Number of classes.
        """

    def _tune_space(self, space: SearchSpace, n_classes: int) -> dict[str, Any]:
        """Tune's ``param_space`` (empty when the searcher holds the space itself)."""
        return param_space(space, n_classes)

    def run(self, problem: TuningProblem, budget: float | None, seed: int, ctx: RunContext) -> StrategyResult:
        """Run ``budget`` Tune trials and collect every evaluated configuration.

        Args:
            problem: The tuning problem.
            budget: Full-set evaluations (= trials); None -> :data:`DEFAULT_BUDGET`.
            seed: Seeds the searcher.
            ctx: Work directory (Tune's storage under ``<workdir>/tune``) and progress
                (called with the trials finished so far). Tune needs Ray: without an
                initialised Ray, a local instance is started (whatever ``ctx.use_ray``).

        Raises:
            SedtuneInputError: A budget below 1, an unusable warm start.
            RuntimeError: No trial produced a result.
        """
        self.check_budget(budget, len(problem.space.settings))
        import ray
        from ray import tune

        t0 = time.perf_counter()
        opts = self._options_as(TuneOptions)
        n_trials = trial_budget(budget)
        classes = tuple(problem.classes)
        points = _unique([encode(p, classes, problem.space) for p in self._points(problem)])[:n_trials]
        if not ray.is_initialized():
            LOG.info("%s: Ray is not initialised; starting a local instance", self.name)
            ray.init()
        search_alg, limit = self._search(points, seed, n_trials, problem.space, len(classes))
        setup = TrialSetup(
            data=problem.data,
            metric=problem.metric,
            classes=classes,
            space=problem.space,
            folds=tuple(int(f) for f in problem.folds),
            n_folds=problem.n_folds,
            fault_marker=opts.fault_marker,
        )
        trials = _Trials(records={}, started_at=t0)
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, setup=setup), {"cpu": opts.cpus_per_trial}),
            param_space=self._tune_space(problem.space, len(classes)),
            tune_config=tune.TuneConfig(
                metric="f",
                mode="max",
                num_samples=n_trials,
                search_alg=search_alg,
                max_concurrent_trials=limit,
                reuse_actors=opts.reuse_actors,
            ),
            run_config=tune.RunConfig(
                storage_path=os.path.abspath(os.path.join(ctx.workdir, "tune")),
                name=f"{self.name}-seed{seed}-{uuid.uuid4().hex[:8]}",
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                stop=_stopper(trials),
                callbacks=[_collector(trials, ctx.report)],
                verbose=0,
            ),
        )
        LOG.info(
            "%s: %d trials, %d classes, %d warm-start point(s)",
            self.name,
            n_trials,
            len(classes),
            len(points),
        )
        with _without_tune_loggers():
            tuner.fit()
        return self._result(trials, classes, problem, t0)

    def _result(
        self, trials: _Trials, classes: Sequence[str], problem: TuningProblem, t0: float
    ) -> StrategyResult:
        traj = Trajectory()
        candidates: dict[str, list[Candidate]] = {c: [] for c in classes}
        best: tuple[float, dict[str, ClassParams]] | None = None
        detail: list[dict[str, Any]] = []
        done = 0.0
        for i, idx in enumerate(sorted(trials.records)):
            rec = trials.records[idx]
            # The point's time: when trials 1..i+1 had all finished (trial order is not
            # completion order).
            done = max(done, rec.done_at if math.isfinite(rec.done_at) else time.perf_counter())
            traj.add(i + 1, math.nan if rec.f is None else rec.f, wall_s=done - trials.started_at)
            if rec.f is None or rec.counts is None:
                continue
            params = decode(rec.config, classes, problem.space)
            detail.append({"index": i, "f": rec.f, "params": {c: p.to_json() for c, p in params.items()}})
            for c, cnt in zip(classes, rec.counts, strict=True):
                counts = np.asarray(cnt, dtype=np.int64).reshape(problem.n_folds, 3)
                candidates[c].append(Candidate(params[c], counts))
            # Strictly greater: ties go to the earlier trial, so the pick is deterministic.
            # A NaN F only stands until a finite one comes.
            if best is None or rec.f > best[0] or (math.isnan(best[0]) and math.isfinite(rec.f)):
                best = (rec.f, params)
        n, n_failed = len(trials.records), trials.n_failed
        if best is None:
            first = next((r.error for r in trials.records.values() if r.error), None)
            raise RuntimeError(
                f"{self.name}: none of the {n} Tune trials produced a result (first error: {first})"
            )
        LOG.info(
            "%s: best tuning F %.4f after %d trials (%d failed, %d retries)",
            self.name,
            best[0],
            n,
            n_failed,
            trials.retries,
        )
        return StrategyResult(
            strategy=self.name,
            naive=best[1],
            candidates=candidates,
            trajectory=traj.points,
            evaluations=float(n),
            wall_s=time.perf_counter() - t0,
            info={
                "trials": n,
                "failed_trials": n_failed,
                "retried_trials": trials.retries,
                "trials_detail": detail,
                "nodes": sorted({r.node for r in trials.records.values() if r.node}),
            },
        )


def _unique(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Keep the first of equal points: one evaluation each.
    out: list[dict[str, Any]] = []
    for p in points:
        if p not in out:
            out.append(p)
    return out


class RandomStrategy(_TuneStrategy):
    """Random search over the joint per-class space (Tune's ``BasicVariantGenerator``).

    Kernels, gaps and minimum durations are drawn uniformly from their sets, thresholds
    uniformly from the range; with two decoders, each class's decoder uniformly, then each
    stage of that decoder uniformly (:func:`param_space`). Configurations come from the
    seeded generator alone, so the evaluated set and the result are the same for a seed at
    any concurrency.
    """

    name: ClassVar[str] = "random"
    Options: ClassVar[type[StrategyOptions]] = RandomOptions

    def _search(
        self, points: list[dict[str, Any]], seed: int, n_trials: int, space: SearchSpace, n_classes: int
    ) -> tuple[SearchAlgorithm | Searcher, int | None]:
        from ray.tune.search import BasicVariantGenerator

        opts = self._options_as(RandomOptions)
        k = opts.max_concurrent_trials or _auto_concurrency(opts.cpus_per_trial)
        # A generator, not a Searcher: it limits concurrency itself (Tune ignores
        # TuneConfig.max_concurrent_trials for it, with a warning).
        return BasicVariantGenerator(max_concurrent=min(k, n_trials), random_state=seed), None


class BayesStrategy(_TuneStrategy):
    """Optuna TPE over the joint per-class space (``ray.tune.search.optuna.OptunaSearch``).

    TPE models kernels, gaps and minimum durations as categoricals and the threshold as a
    float, with ``TPESampler(seed=seed)``. With two decoders the space is conditional
    (:class:`ConditionalSpace`) and the sampler is multivariate TPE with the group-decomposed
    search space (``multivariate=True, group=True``): the dimensions always present (every
    class's decoder, threshold, gap, minimum duration) are modelled jointly, so a class's
    threshold is modelled together with its decoder (a frame threshold and a box-confidence
    threshold mean different things), and each class's conditional dimensions form their own
    groups, modelled on the trials where they were active. The box stages are separate
    categoricals rather than one over their combinations: each value then learns from every
    trial that used it, and within a class's box group they are still modelled jointly.
    The manual setting (``include_manual``) and ``warm_start`` are evaluated first, through
    ``points_to_evaluate`` (they count toward the budget), snapped into the space.
    """

    name: ClassVar[str] = "bayes"
    Options: ClassVar[type[StrategyOptions]] = BayesOptions

    def _points(self, problem: TuningProblem) -> list[dict[str, ClassParams]]:
        opts = self._options_as(BayesOptions)
        out = []
        if opts.include_manual:
            out.append(complete_params(problem.manual, problem, "manual"))
        if opts.warm_start is not None:
            out.append(warm_start_params(opts.warm_start, problem))
        return out

    def _tune_space(self, space: SearchSpace, n_classes: int) -> dict[str, Any]:
        # Two decoders: the searcher holds the conditional space (ConditionalSpace).
        return {} if len(space.decoders) > 1 else param_space(space, n_classes)

    def _search(
        self, points: list[dict[str, Any]], seed: int, n_trials: int, space: SearchSpace, n_classes: int
    ) -> tuple[SearchAlgorithm | Searcher, int | None]:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        opts = self._options_as(BayesOptions)
        if len(space.decoders) == 1:
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=opts.n_startup_trials)
            searcher = OptunaSearch(sampler=sampler, points_to_evaluate=points or None)
            return searcher, opts.max_concurrent_trials
        with warnings.catch_warnings():
            # `group` is marked experimental in Optuna; it is the documented way to run
            # multivariate TPE on a conditional (define-by-run) space.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=opts.n_startup_trials,
                multivariate=True,
                group=True,
            )
        searcher = OptunaSearch(
            space=ConditionalSpace(space, n_classes),
            metric="f",
            mode="max",
            sampler=sampler,
            points_to_evaluate=points or None,
        )
        return searcher, opts.max_concurrent_trials
