"""Random and Bayesian (Optuna TPE) search over the joint per-class space, on Ray Tune.

Both strategies search every class's parameters at once (the *joint* space: for each class a
median-filter kernel, a threshold and, where the space offers more than one value, a gap
fill and a minimum duration). They ignore that the objective is separable; they are the
plain black-box baselines that the exact strategy is measured against (DESIGN.md, "Search
strategies").

One Tune trial evaluates one joint configuration on all tuning clips: one trial is one
full-set evaluation, so the budget is the number of trials (``None`` -> 100).

How a trial runs: the function trainable receives the configuration (flat keys by class
index, see :func:`param_space`) and, through ``tune.with_parameters``, a small
:class:`TrialSetup` holding the :class:`service.problem.DataRef`, the metric, the fold ids of
the tuning clips and the space. On its worker it loads the data by reference (cached per
process by ``DataRef.load``), builds an :class:`envs.evaluator.Evaluator` (cached per process,
so reused actors keep their median-filter caches), and reports the macro F (``"f"``) and the
per-class fold counts with ``ray.tune.report``. Score arrays never travel through Ray.

Determinism: the result is built in trial-creation order, never completion order, and the
naive pick breaks ties by trial index. Random search draws every configuration up front
from ``BasicVariantGenerator(random_state=seed)``, so it is deterministic at any
concurrency. TPE's suggestions depend on which trials have completed when it is asked, so
:class:`BayesStrategy` runs one trial at a time by default (``max_concurrent_trials=1``);
with more it is faster but no longer deterministic for a seed (Optuna's default constant
liar then keeps concurrent suggestions apart).

Ray is imported inside :meth:`run` only, so importing this module (job validation) is cheap.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from envs.errors import SedtuneInputError
from envs.evaluator import Evaluator, MetricConfig
from envs.params import ClassParams, ParamFile, check_hop, class_params_from_json, load_params
from envs.selection import Candidate
from envs.space import SearchSpace
from service.problem import DataRef, TuningProblem, fold_counts, macro_from_counts
from service.strategies.base import RunContext, Strategy, StrategyResult, Trajectory

if TYPE_CHECKING:
    from ray.tune import Callback
    from ray.tune.search import Searcher, SearchAlgorithm

LOG = logging.getLogger(__name__)

#: Trials when the job gives no budget.
DEFAULT_BUDGET = 100

I64 = npt.NDArray[np.int64]

# Tune config keys per class field. Keys are flat and name the class by index: class labels
# may hold any character, and Tune splits nested config keys on "/".
_KERNEL, _THRESHOLD, _GAP, _MIN_DUR = "kernel", "threshold", "gap", "min_dur"


def _key(class_index: int, name: str) -> str:
    return f"c{class_index:04d}_{name}"


# --------------------------------------------------------------------------- the space


def param_space(space: SearchSpace, n_classes: int) -> dict[str, Any]:
    """The Tune search space of the joint per-class problem.

    A discrete dimension (kernel, gap, minimum duration) is included only when the space
    offers more than one value; the threshold is always uniform in the space's range.

    Args:
        space: The per-class space.
        n_classes: Number of classes.

    Returns:
        Flat dict of Tune domains keyed ``c0000_kernel``, ``c0000_threshold``, ...
    """
    from ray import tune

    out: dict[str, Any] = {}
    for i in range(n_classes):
        if len(space.kernels) > 1:
            out[_key(i, _KERNEL)] = tune.choice(list(space.kernels))
        out[_key(i, _THRESHOLD)] = tune.uniform(space.threshold_low, space.threshold_high)
        if len(space.fill_gap_s) > 1:
            out[_key(i, _GAP)] = tune.choice([float(g) for g in space.fill_gap_s])
        if len(space.min_duration_s) > 1:
            out[_key(i, _MIN_DUR)] = tune.choice([float(d) for d in space.min_duration_s])
    return out


def decode(config: Mapping[str, Any], classes: Sequence[str], space: SearchSpace) -> dict[str, ClassParams]:
    """Per-class parameters of a Tune config (dimensions left out take the space's only value)."""
    out = {}
    for i, c in enumerate(classes):
        out[c] = ClassParams(
            median_filter_frames=int(config.get(_key(i, _KERNEL), space.kernels[0])),
            threshold=float(config[_key(i, _THRESHOLD)]),
            fill_gap_s=float(config.get(_key(i, _GAP), space.fill_gap_s[0])),
            min_duration_s=float(config.get(_key(i, _MIN_DUR), space.min_duration_s[0])),
        )
    return out


def _nearest(value: float, allowed: Sequence[float]) -> float:
    # Ties go to the smaller value (less smoothing / less clean-up), as kernels_for_seconds.
    return min(allowed, key=lambda a: (abs(a - value), a))


def snap(params: ClassParams, space: SearchSpace) -> ClassParams:
    """The nearest parameters inside the space.

    The kernel, gap and minimum duration go to the nearest allowed value (the smaller on
    ties), the threshold is clipped to the range and hysteresis is dropped (the space has
    none).
    """
    return ClassParams(
        median_filter_frames=int(_nearest(params.median_filter_frames, space.kernels)),
        threshold=float(min(max(params.threshold, space.threshold_low), space.threshold_high)),
        fill_gap_s=float(_nearest(params.fill_gap_s, space.fill_gap_s)),
        min_duration_s=float(_nearest(params.min_duration_s, space.min_duration_s)),
    )


def encode(params: Mapping[str, ClassParams], classes: Sequence[str], space: SearchSpace) -> dict[str, Any]:
    """A Tune config (``points_to_evaluate`` entry) of per-class parameters, snapped into the space.

    Only the dimensions of :func:`param_space` appear: searchers require warm-start points
    with exactly the space's keys.
    """
    out: dict[str, Any] = {}
    for i, c in enumerate(classes):
        p = snap(params[c], space)
        if len(space.kernels) > 1:
            out[_key(i, _KERNEL)] = p.median_filter_frames
        out[_key(i, _THRESHOLD)] = p.threshold
        if len(space.fill_gap_s) > 1:
            out[_key(i, _GAP)] = p.fill_gap_s
        if len(space.min_duration_s) > 1:
            out[_key(i, _MIN_DUR)] = p.min_duration_s
    return out


# --------------------------------------------------------------------------- the trial


@dataclass(frozen=True)
class TrialSetup:
    """What every trial needs besides its configuration (small and picklable).

    Attributes:
        data: Reference to the tuning clips; each worker reads them itself.
        metric: Collars.
        classes: Class labels, in the order of the config's class indices.
        space: The per-class space (for dimensions the config leaves out).
        folds: Fold id of every tuning clip.
        n_folds: Number of folds.
        fault_marker: Test only: the first trial that finds no file at this path creates it
            and kills its worker process (``os._exit``), to exercise Tune's retries.
    """

    data: DataRef
    metric: MetricConfig
    classes: tuple[str, ...]
    space: SearchSpace
    folds: tuple[int, ...]
    n_folds: int
    fault_marker: str | None = None


# Per worker process: reused actors keep the evaluator and its median-filter caches.
_EVALUATORS: dict[tuple[DataRef, MetricConfig], Evaluator] = {}


def _evaluator(data: DataRef, metric: MetricConfig) -> Evaluator:
    key = (data, metric)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(data.load(), metric)
    return _EVALUATORS[key]


def evaluate_config(setup: TrialSetup, config: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate one joint configuration on the tuning clips (in this process).

    Returns:
        ``{"f": macro F, "counts": per class (in ``setup.classes`` order) the
        [nref, nsys, ntp] of every fold as nested lists}``.
    """
    params = decode(config, setup.classes, setup.space)
    folds = np.asarray(setup.folds, dtype=np.int64)
    counts = fold_counts(_evaluator(setup.data, setup.metric), params, folds, setup.n_folds)
    return {
        "f": float(macro_from_counts(counts)),
        "counts": [counts[c].tolist() for c in setup.classes],
    }


def _fail_once(marker: str | None) -> None:
    if marker is None:
        return
    try:
        # O_EXCL: of concurrent trials exactly one creates the marker, and only it dies.
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    LOG.warning("fault_marker %s: killing this worker process (test hook)", marker)
    os._exit(1)


def _trainable(config: dict[str, Any], setup: TrialSetup) -> None:
    """Tune function trainable: one full-set evaluation, reported once."""
    from ray import tune

    _fail_once(setup.fault_marker)
    t0 = time.perf_counter()
    out = evaluate_config(setup, config)
    # Diagnostics: evaluation seconds and worker process (shows actor reuse and cache warm-up).
    out.update(eval_s=time.perf_counter() - t0, pid=os.getpid())
    tune.report(out)


# --------------------------------------------------------------------------- the driver


@dataclass
class _TrialRecord:
    """One trial as the driver saw it."""

    config: dict[str, Any]
    f: float | None = None
    counts: list[list[list[int]]] | None = None
    failed: bool = False


def _collector(progress: Any) -> Callback:
    """A Tune callback recording every trial's config and result, in creation order."""
    from ray.tune import Callback

    class Collector(Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.records: dict[int, _TrialRecord] = {}
            self._index: dict[str, int] = {}
            self._done = 0

        def _record(self, trials: list[Any], trial: Any) -> _TrialRecord:
            # The controller's trial list is in creation order; trial ids of searcher-made
            # trials are random, so the position is the index.
            if trial.trial_id not in self._index:
                pos = next(i for i, t in enumerate(trials) if t is trial)
                self._index[trial.trial_id] = pos
                self.records[pos] = _TrialRecord(config=dict(trial.config))
            return self.records[self._index[trial.trial_id]]

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                            **info: Any) -> None:
            rec = self._record(trials, trial)
            if "f" in result and rec.f is None:
                rec.f = float(result["f"])
                rec.counts = result["counts"]
                self._done += 1
                progress(float(self._done))

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            rec = self._record(trials, trial)
            if rec.f is None:
                rec.failed = True
                self._done += 1
                progress(float(self._done))

        def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
            # Trials that never reported nor errored (e.g. stopped) still count as spent.
            for t in trials:
                rec = self._record(trials, t)
                if rec.f is None:
                    rec.failed = True

    return Collector()


def trial_budget(budget: float | None) -> int:
    """Number of trials for a budget in full-set evaluations (never more than the budget).

    Raises:
        SedtuneInputError: A budget below one evaluation.
    """
    if budget is None:
        return DEFAULT_BUDGET
    if not budget >= 1:
        raise SedtuneInputError(f"budget: must be >= 1 full-set evaluation for a Tune search, but got {budget!r}")
    return int(math.floor(budget))


class TuneOptions(BaseModel):
    """Options shared by the Tune strategies.

    Attributes:
        max_concurrent_trials: Trials running at once.
        cpus_per_trial: CPUs reserved per trial (one evaluation is single-threaded).
        max_failures: Retries of a trial whose worker dies.
        fault_marker: Test only (see :class:`TrialSetup`); leave unset.
    """

    model_config = ConfigDict(extra="forbid")

    max_concurrent_trials: int = Field(default=2, ge=1)
    cpus_per_trial: float = Field(default=1.0, gt=0)
    max_failures: int = Field(default=3, ge=0)
    fault_marker: str | None = None


class _TuneStrategy(Strategy):
    """Shared driver: build the space, run the Tuner, turn trials into a result."""

    Options: ClassVar[type[BaseModel]] = TuneOptions

    def _opts(self) -> TuneOptions:
        assert isinstance(self.options, TuneOptions)  # set by Strategy.__init__ from Options
        return self.options

    def _points(self, problem: TuningProblem) -> list[dict[str, ClassParams]]:
        """Warm-start configurations, evaluated first (none by default)."""
        return []

    def _search_alg(self, points: list[dict[str, Any]], seed: int) -> SearchAlgorithm | Searcher:
        raise NotImplementedError

    def run(self, problem: TuningProblem, budget: float | None, seed: int, ctx: RunContext) -> StrategyResult:
        """Run ``budget`` Tune trials and collect every evaluated configuration.

        Args:
            problem: The tuning problem.
            budget: Full-set evaluations (= trials); None -> :data:`DEFAULT_BUDGET`.
            seed: Seeds the searcher.
            ctx: Work directory (Tune's storage under ``<workdir>/tune``) and progress.

        Raises:
            RuntimeError: If no trial produced a result.
        """
        from ray import tune

        t0 = time.perf_counter()
        opts = self._opts()
        n_trials = trial_budget(budget)
        classes = tuple(problem.classes)
        # Deduplicated, in order; never more warm-start points than trials.
        points: list[dict[str, Any]] = []
        for p in self._points(problem):
            enc = encode(p, classes, problem.space)
            if enc not in points:
                points.append(enc)
        points = points[:n_trials]
        setup = TrialSetup(
            data=problem.data,
            metric=problem.metric,
            classes=classes,
            space=problem.space,
            folds=tuple(int(f) for f in problem.folds),
            n_folds=problem.n_folds,
            fault_marker=opts.fault_marker,
        )
        trainable = tune.with_resources(tune.with_parameters(_trainable, setup=setup), {"cpu": opts.cpus_per_trial})
        collector = _collector(ctx.progress)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(problem.space, len(classes)),
            tune_config=tune.TuneConfig(
                metric="f",
                mode="max",
                num_samples=n_trials,
                search_alg=self._search_alg(points, seed),
                max_concurrent_trials=self._concurrency(),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                storage_path=os.path.abspath(os.path.join(ctx.workdir, "tune")),
                name=f"{self.name}-seed{seed}-{uuid.uuid4().hex[:8]}",
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                callbacks=[collector],
                verbose=0,
            ),
        )
        LOG.info("%s: %d trials over %d classes (%d warm-start points)", self.name, n_trials, len(classes),
                 len(points))
        tuner.fit()
        return self._result(collector.records, classes, problem.space, problem.n_folds, t0)

    def _concurrency(self) -> int | None:
        """Tune's ``max_concurrent_trials`` (None when the search algorithm limits itself)."""
        return self._opts().max_concurrent_trials

    def _result(self, records: Mapping[int, _TrialRecord], classes: Sequence[str], space: SearchSpace,
                n_folds: int, t0: float) -> StrategyResult:
        traj = Trajectory()
        candidates: dict[str, list[Candidate]] = {c: [] for c in classes}
        best: tuple[float, dict[str, ClassParams]] | None = None
        n_failed = 0
        for i, idx in enumerate(sorted(records)):
            rec = records[idx]
            if rec.f is None or rec.counts is None:
                n_failed += 1
                traj.add(i + 1, math.nan)
                continue
            params = decode(rec.config, classes, space)
            for c, cnt in zip(classes, rec.counts, strict=True):
                candidates[c].append(Candidate(params[c], np.asarray(cnt, dtype=np.int64).reshape(n_folds, 3)))
            traj.add(i + 1, rec.f)
            # Strictly greater: ties go to the earlier trial, so the pick is deterministic.
            if best is None or rec.f > best[0]:
                best = (rec.f, params)
        if best is None:
            raise RuntimeError(f"{self.name}: none of the {len(records)} Tune trials produced a result")
        n = len(records)
        LOG.info("%s: best tuning F %.4f after %d trials (%d failed)", self.name, best[0], n, n_failed)
        return StrategyResult(
            strategy=self.name,
            naive=best[1],
            candidates=candidates,
            trajectory=traj.points,
            evaluations=float(n),
            wall_s=time.perf_counter() - t0,
            info={"trials": n, "failed_trials": n_failed},
        )


class RandomStrategy(_TuneStrategy):
    """Random search over the joint per-class space (Tune's ``BasicVariantGenerator``).

    Every configuration is drawn up front from the seeded generator, so the evaluated set and
    the result are the same for a seed at any ``max_concurrent_trials``.
    """

    name: ClassVar[str] = "random"

    def _concurrency(self) -> int | None:
        return None

    def _search_alg(self, points: list[dict[str, Any]], seed: int) -> SearchAlgorithm:
        from ray.tune.search import BasicVariantGenerator

        # A generator, not a Searcher: Tune ignores TuneConfig.max_concurrent_trials for it.
        return BasicVariantGenerator(max_concurrent=self._opts().max_concurrent_trials, random_state=seed)


class BayesOptions(TuneOptions):
    """Options of :class:`BayesStrategy`.

    Attributes:
        max_concurrent_trials: Trials running at once. 1 (default) keeps TPE deterministic
            for a seed; more is faster but makes suggestions depend on completion order.
        warm_start: Configuration evaluated first: a sedtune parameter file (path) or an
            inline ``{class: {"threshold": ..., "median_filter_frames": ...}}``; classes it
            leaves out take the manual setting. Snapped into the space.
        include_manual: Evaluate the manual setting first (before ``warm_start``).
        n_startup_trials: Trials TPE samples at random (warm-start points included) before
            it models the objective.
    """

    max_concurrent_trials: int = Field(default=1, ge=1)
    warm_start: str | dict[str, dict[str, Any]] | None = None
    include_manual: bool = True
    n_startup_trials: int = Field(default=10, ge=0)

    @field_validator("warm_start")
    @classmethod
    def _check_inline(cls, v: str | dict[str, dict[str, Any]] | None) -> str | dict[str, dict[str, Any]] | None:
        # A path is checked at run time (nightly retunes name a file written later).
        if isinstance(v, dict):
            if not v:
                raise ValueError("must name at least one class")
            for label, entry in v.items():
                try:
                    class_params_from_json(entry, f"class {label!r}")
                except SedtuneInputError as e:
                    raise ValueError(str(e)) from None
        return v


class BayesStrategy(_TuneStrategy):
    """Optuna TPE over the joint per-class space (``ray.tune.search.optuna.OptunaSearch``).

    TPE models kernels, gaps and minimum durations as categoricals and the threshold as a
    float. The manual setting (``include_manual``) and ``warm_start`` are evaluated first,
    through ``points_to_evaluate``.
    """

    name: ClassVar[str] = "bayes"
    Options: ClassVar[type[BaseModel]] = BayesOptions

    def _points(self, problem: TuningProblem) -> list[dict[str, ClassParams]]:
        opts = self.options
        assert isinstance(opts, BayesOptions)
        out = []
        if opts.include_manual:
            out.append(dict(problem.manual))
        if opts.warm_start is not None:
            out.append(_warm_start(opts.warm_start, problem))
        return out

    def _search_alg(self, points: list[dict[str, Any]], seed: int) -> Searcher:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        opts = self.options
        assert isinstance(opts, BayesOptions)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=opts.n_startup_trials)
        return OptunaSearch(sampler=sampler, points_to_evaluate=points or None)


def _warm_start(source: str | dict[str, dict[str, Any]], problem: TuningProblem) -> dict[str, ClassParams]:
    """Per-class warm-start parameters for every class of the problem.

    Raises:
        SedtuneInputError: Unreadable file, other frame hop, classes the problem does not have.
    """
    where = "options.warm_start"
    if isinstance(source, str):
        pf: ParamFile = load_params(source)
        # Kernels are in frames: another hop would mean other filter lengths.
        check_hop(pf, problem.tuning.frame_hop_s, f"{where} ({source})")
        given = pf.classes
    else:
        given = {str(k): class_params_from_json(v, f"{where}.{k}") for k, v in source.items()}
    unknown = sorted(set(given) - set(problem.classes))
    if unknown:
        raise SedtuneInputError(f"{where}: classes {unknown} are not among the problem's classes {problem.classes}")
    missing = [c for c in problem.classes if c not in given]
    if missing:
        LOG.info("%s: no entry for %s; using the manual setting for them", where, missing)
    return {c: given.get(c, problem.manual[c]) for c in problem.classes}


__all__ = [
    "DEFAULT_BUDGET",
    "BayesOptions",
    "BayesStrategy",
    "RandomStrategy",
    "TrialSetup",
    "TuneOptions",
    "decode",
    "encode",
    "evaluate_config",
    "param_space",
    "snap",
    "trial_budget",
]
