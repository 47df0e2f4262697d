"""Random and Bayesian (Optuna TPE) search over the joint per-class space, on Ray Tune.

Both strategies search every class's parameters at once (the *joint* space: per class a
median-filter kernel, a threshold and, where the space offers more than one value, a gap
fill and a minimum duration). They ignore that the objective is separable: they are the
plain black-box baselines the exact strategy is measured against (DESIGN.md, "Search
strategies").

Two decoders (:func:`param_space`): when the space searches both ``frames`` and ``boxes``,
every class gets a categorical ``decoder`` dimension; the ``frames`` kernel and the box
stages (box kernel, step filter, merge criterion, confidence: separate categoricals, each only
when it has more than one value) apply only under their decoder; the threshold, gap and
minimum duration are shared. Random search draws every dimension and ignores the inactive
ones (the same distribution as drawing them conditionally). TPE gets the conditional space
as an Optuna define-by-run function (:class:`ConditionalSpace`): an inactive dimension is
not suggested, so it never enters TPE's model through trials where it had no effect. With one
decoder the Tune config is the ``frames``-only one of before (no decoder dimension).

Budget: one Tune trial evaluates one joint configuration on all tuning clips, i.e. one
full-set evaluation, so the budget is the number of trials (``None`` -> 100), never more.

A trial: the function trainable receives the configuration (flat keys by class index, see
:func:`param_space`) and, through ``tune.with_parameters``, a small :class:`TrialSetup` (the
:class:`envs.problem.DataRef`, the metric, the fold ids of the tuning clips, the space).
On its worker it loads the data by reference (cached per process by ``DataRef.load``),
keeps one :class:`envs.evaluator.Evaluator` per process (so a reused actor keeps its
median-filter caches), and reports the macro F (``"f"``) and the per-class fold counts with
``ray.tune.report``. Score arrays never travel through Ray.

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

import logging
import math
import os
import time
import uuid
import warnings
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from envs.errors import SedtuneInputError
from envs.evaluator import Evaluator, MetricConfig
from envs.params import ClassParams, check_hop, class_params_from_json, load_params
from envs.problem import DataRef, TuningProblem, fold_counts, macro_from_counts
from envs.selection import Candidate
from envs.snap import snap_params
from envs.space import SearchSpace
from service.strategies.base import ProgressFn, RunContext, Strategy, StrategyResult, Trajectory, current_node

if TYPE_CHECKING:
    from ray.tune import Callback, Stopper
    from ray.tune.search import SearchAlgorithm, Searcher

LOG = logging.getLogger(__name__)

#: Trials when the job gives no budget.
DEFAULT_BUDGET = 100
#: Stop the experiment when this many trials have failed (after retries) and none succeeded:
#: the failure is systematic (unreadable data on the workers, a bug), not a flaky worker.
SYSTEMATIC_FAILURES = 3

# Tune config keys per class field. Keys are flat and name the class by index: class labels
# may hold any character, and Tune splits nested config keys on "/".
_KERNEL, _THRESHOLD, _GAP, _MIN_DUR = "kernel", "threshold", "gap", "min_dur"
# Two-decoder and boxes dimensions (the merge criterion is an index into space.box_merge:
# Optuna categoricals hold scalars, not (abs, rel) pairs).
_DECODER, _BOX_KERNEL, _STEP, _MERGE, _CONF = "decoder", "box_kernel", "step_filter", "merge", "confidence"

_O = TypeVar("_O", bound=BaseModel)

#: A warm start: a parameter-file path, or inline ``{class: {field: value}}``.
WarmStart = str | dict[str, dict[str, Any]]


def _key(class_index: int, name: str) -> str:
    return f"c{class_index:04d}_{name}"


# --------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class _Dim:
    """One per-class dimension of the Tune config.

    Attributes:
        name: Key suffix (``kernel``, ``threshold``, ...).
        choices: Categorical values; None for the threshold (uniform in the space's range).
        decoder: The decoder under which it applies (two-decoder spaces), None: always.
    """

    name: str
    choices: tuple[Any, ...] | None
    decoder: str | None = None


def _dims(space: SearchSpace) -> list[_Dim]:
    """Every class's dimensions in config order; a stage with one value takes none.

    ``frames`` only: kernel, threshold, gap, minimum duration (the order of old configs).
    """
    two = len(space.decoders) > 1
    out: list[_Dim] = []
    if two:
        out.append(_Dim(_DECODER, tuple(space.decoders)))
    if "frames" in space.decoders and len(space.kernels) > 1:
        out.append(_Dim(_KERNEL, tuple(int(k) for k in space.kernels), "frames" if two else None))
    if "boxes" in space.decoders:
        box_dims: list[tuple[str, tuple[Any, ...]]] = [
            (_BOX_KERNEL, tuple(int(k) for k in space.box_kernels)),
            (_STEP, tuple(float(x) for x in space.box_step_filter_s)),
            (_MERGE, tuple(range(len(space.box_merge)))),
            (_CONF, tuple(str(c) for c in space.box_confidence)),
        ]
        out += [_Dim(n, v, "boxes" if two else None) for n, v in box_dims if len(v) > 1]
    out.append(_Dim(_THRESHOLD, None))
    if len(space.fill_gap_s) > 1:
        out.append(_Dim(_GAP, tuple(float(g) for g in space.fill_gap_s)))
    if len(space.min_duration_s) > 1:
        out.append(_Dim(_MIN_DUR, tuple(float(d) for d in space.min_duration_s)))
    return out


def param_space(space: SearchSpace, n_classes: int) -> dict[str, Any]:
    """The Tune search space of the joint per-class problem (every dimension, flat).

    A discrete dimension (decoder, kernel, box stages, gap, minimum duration) is a
    ``tune.choice`` included only when the space offers more than one value; the threshold
    is uniform in the space's range. With two decoders the dimensions of the decoder a class
    did not draw are drawn too and ignored (:func:`decode`); TPE uses
    :class:`ConditionalSpace` instead.

    Args:
        space: The per-class space.
        n_classes: Number of classes.

    Returns:
        Flat dict of Tune domains keyed ``c0000_kernel``, ``c0000_threshold``, ...
    """
    from ray import tune

    dims = _dims(space)
    out: dict[str, Any] = {}
    for i in range(n_classes):
        for d in dims:
            if d.choices is None:
                out[_key(i, d.name)] = tune.uniform(space.threshold_low, space.threshold_high)
            else:
                out[_key(i, d.name)] = tune.choice(list(d.choices))
    return out


@dataclass(frozen=True)
class ConditionalSpace:
    """The joint space as an Optuna define-by-run function (TPE on two-decoder spaces).

    Per class it suggests the decoder first, then only that decoder's dimensions, then the
    shared threshold, gap and minimum duration: TPE models a conditional dimension on the
    trials where it was active only. Keys and values are those of :func:`param_space`.
    A module-level class, not a closure, so that Tune can pickle the searcher.

    Attributes:
        space: The per-class space.
        n_classes: Number of classes.
    """

    space: SearchSpace
    n_classes: int

    def __call__(self, trial: Any) -> None:
        """Suggest every class's active dimensions on an ``optuna.Trial``."""
        dims = _dims(self.space)
        for i in range(self.n_classes):
            decoder = self.space.decoders[0]
            for d in dims:
                if d.decoder is not None and d.decoder != decoder:
                    continue
                name = _key(i, d.name)
                if d.choices is None:
                    trial.suggest_float(name, self.space.threshold_low, self.space.threshold_high)
                    continue
                value = trial.suggest_categorical(name, list(d.choices))
                if d.name == _DECODER:
                    decoder = str(value)


def decode(config: Mapping[str, Any], classes: Sequence[str], space: SearchSpace) -> dict[str, ClassParams]:
    """Per-class parameters of a Tune config; dimensions left out take the space's only value.

    Dimensions of the decoder a class did not choose are ignored.
    """
    out = {}
    for i, c in enumerate(classes):

        def get(name: str, default: Any, i: int = i) -> Any:
            return config.get(_key(i, name), default)

        decoder = str(get(_DECODER, space.decoders[0]))
        threshold = float(config[_key(i, _THRESHOLD)])
        gap = float(get(_GAP, space.fill_gap_s[0]))
        dur = float(get(_MIN_DUR, space.min_duration_s[0]))
        if decoder == "frames":
            out[c] = ClassParams(
                median_filter_frames=int(get(_KERNEL, space.kernels[0])),
                threshold=threshold,
                fill_gap_s=gap,
                min_duration_s=dur,
            )
            continue
        merge_abs, merge_rel = space.box_merge[int(get(_MERGE, 0))]
        out[c] = ClassParams(
            median_filter_frames=int(get(_BOX_KERNEL, space.box_kernels[0])),
            threshold=threshold,
            fill_gap_s=gap,
            min_duration_s=dur,
            decoder="boxes",
            step_filter_s=float(get(_STEP, space.box_step_filter_s[0])),
            merge_abs=merge_abs,
            merge_rel=merge_rel,
            confidence=str(get(_CONF, space.box_confidence[0])),
        )
    return out


def _value(p: ClassParams, name: str, space: SearchSpace) -> Any:
    """The config value of one dimension for in-space parameters ``p``."""
    if name == _MERGE:
        pair = (p.merge_abs, p.merge_rel)
        return next(j for j, m in enumerate(space.box_merge) if tuple(m) == pair)
    attr = {
        _DECODER: "decoder",
        _KERNEL: "median_filter_frames",
        _BOX_KERNEL: "median_filter_frames",
        _STEP: "step_filter_s",
        _CONF: "confidence",
        _THRESHOLD: "threshold",
        _GAP: "fill_gap_s",
        _MIN_DUR: "min_duration_s",
    }[name]
    return getattr(p, attr)


def encode(params: Mapping[str, ClassParams], classes: Sequence[str], space: SearchSpace) -> dict[str, Any]:
    """A Tune config (a ``points_to_evaluate`` entry) of per-class parameters, snapped into the space.

    Only the dimensions of :func:`param_space` appear (searchers require warm-start points
    with exactly the space's keys), and of a two-decoder space only those of each class's
    decoder (:class:`ConditionalSpace`'s keys).
    """
    dims = _dims(space)
    out: dict[str, Any] = {}
    for i, c in enumerate(classes):
        p = snap_params(params[c], space)
        for d in dims:
            if d.decoder is None or d.decoder == p.decoder:
                out[_key(i, d.name)] = _value(p, d.name, space)
    return out


def trial_budget(budget: float | None) -> int:
    """Trials for a budget in full-set evaluations (one trial = one evaluation; never more).

    Raises:
        SedtuneInputError: A budget below one evaluation.
    """
    if budget is None:
        return DEFAULT_BUDGET
    if not budget >= 1:
        raise SedtuneInputError(
            f"budget: must be >= 1 full-set evaluation for a Tune search, but got {budget!r}"
        )
    return math.floor(budget)


# --------------------------------------------------------------------------- the trial


@dataclass(frozen=True)
class TrialSetup:
    """What every trial needs besides its configuration (small and picklable).

    Attributes:
        data: Reference to the tuning clips; each worker reads them itself.
        metric: Collars.
        classes: Class labels, in the order of the config's class indices.
        space: The per-class space (values of dimensions the config leaves out).
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


# Per worker process: a reused actor keeps the evaluator and its median-filter caches.
_EVALUATORS: dict[tuple[DataRef, MetricConfig], Evaluator] = {}


def _evaluator(data: DataRef, metric: MetricConfig) -> Evaluator:
    key = (data, metric)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(data.load(), metric)
    return _EVALUATORS[key]


def evaluate_config(setup: TrialSetup, config: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate one joint configuration on the tuning clips, in this process.

    Returns:
        ``{"f": tuning macro F, "counts": per class (``setup.classes`` order) the
        [nref, nsys, ntp] of every fold, as nested lists}``.
    """
    params = decode(config, setup.classes, setup.space)
    folds = np.asarray(setup.folds, dtype=np.int64)
    counts = fold_counts(_evaluator(setup.data, setup.metric), params, folds, setup.n_folds)
    return {"f": float(macro_from_counts(counts)), "counts": [counts[c].tolist() for c in setup.classes]}


def _fail_once(marker: str | None) -> None:
    if marker is None:
        return
    try:
        # O_EXCL: of concurrent trials exactly one creates the marker, and only that one dies.
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
    # Diagnostics: seconds spent evaluating, the worker process (shows actor reuse) and node.
    out.update(eval_s=time.perf_counter() - t0, pid=os.getpid(), node=current_node())
    tune.report(out)


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


def _collector(store: _Trials, progress: ProgressFn) -> Callback:
    """A Tune callback that fills ``store`` and reports progress as trials finish."""
    from ray.tune import Callback

    class Collector(Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            self._index: dict[str, int] = {}
            self._finished = 0

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

        def _finish(self) -> None:
            self._finished += 1
            progress(float(self._finished))

        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
        ) -> None:
            rec = self._record(trials, trial)
            if "f" in result and rec.f is None:
                rec.f, rec.counts, rec.error = float(result["f"]), result["counts"], None
                rec.node = str(result.get("node", ""))
                rec.done_at = time.perf_counter()
                self._finish()

        def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            store.retries += 1

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            rec = self._record(trials, trial)
            if rec.f is None and rec.error is None:
                rec.error = _error_text(trial)
                rec.done_at = time.perf_counter()
                self._finish()

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


def _auto_concurrency(cpus_per_trial: float) -> int:
    """Trials at once that leave one CPU of the cluster to the Tune controller (at least 1)."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1.0))  # type: ignore[no-untyped-call]
    return max(1, int((cpus - 1.0) // cpus_per_trial))


class TuneOptions(BaseModel):
    """Options shared by the Tune strategies.

    Attributes:
        cpus_per_trial: CPUs reserved per trial (one evaluation is single-threaded).
        max_failures: Retries of a failed trial (e.g. its worker died). A trial failing every
            retry is counted in ``info["failed_trials"]`` and the search goes on, unless the
            first :data:`SYSTEMATIC_FAILURES` finished trials all failed: then it stops.
        reuse_actors: Run trial after trial in the same worker (about 0.25 s per trial
            instead of about 1 s). Off, every trial gets a fresh worker, placed wherever the
            cluster has a free CPU at that moment.
        fault_marker: Test only (see :class:`TrialSetup`); leave unset.
    """

    model_config = ConfigDict(extra="forbid")

    cpus_per_trial: float = Field(default=1.0, gt=0)
    max_failures: int = Field(default=3, ge=0)
    reuse_actors: bool = True
    fault_marker: str | None = None


class RandomOptions(TuneOptions):
    """Options of :class:`RandomStrategy`.

    Attributes:
        max_concurrent_trials: Trials running at once; None: all CPUs of the cluster but
            one, divided by ``cpus_per_trial``. The result does not depend on it.
    """

    max_concurrent_trials: int | None = Field(default=None, ge=1)


class BayesOptions(TuneOptions):
    """Options of :class:`BayesStrategy`.

    Attributes:
        max_concurrent_trials: Trials running at once. 1 keeps TPE deterministic for a seed;
            more is faster on a cluster but suggestions then depend on completion order.
        warm_start: A configuration evaluated first: a sedtune parameter file (path, same
            frame hop as the scores) or inline ``{class: {"threshold": ...,
            "median_filter_frames": ...}}`` (any fields of a parameter file's class entry,
            ``decoder`` included). Classes it leaves out take the manual setting; values
            outside the space are snapped into it (:func:`snap`; a class whose decoder the
            space does not search takes the other decoder's nearest setting).
        include_manual: Evaluate the problem's manual setting first (before ``warm_start``).
        n_startup_trials: Trials TPE samples at random (warm-start points included) before
            it models the objective.
    """

    max_concurrent_trials: int = Field(default=1, ge=1)
    warm_start: WarmStart | None = None
    include_manual: bool = True
    n_startup_trials: int = Field(default=10, ge=0)

    @field_validator("warm_start")
    @classmethod
    def _check_inline(cls, v: WarmStart | None) -> WarmStart | None:
        # A path is checked at run time: a nightly retune names a file written later.
        if isinstance(v, dict):
            if not v:
                raise ValueError("must name at least one class")
            for label, entry in v.items():
                try:
                    class_params_from_json(entry, f"class {label!r}")
                except SedtuneInputError as e:
                    raise ValueError(str(e)) from None
        return v


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
            tune.with_resources(tune.with_parameters(_trainable, setup=setup), {"cpu": opts.cpus_per_trial}),
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
                callbacks=[_collector(trials, ctx.progress)],
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
    Options: ClassVar[type[BaseModel]] = RandomOptions

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
    Options: ClassVar[type[BaseModel]] = BayesOptions

    def _points(self, problem: TuningProblem) -> list[dict[str, ClassParams]]:
        opts = self._options_as(BayesOptions)
        out = []
        if opts.include_manual:
            out.append(_complete(problem.manual, problem, "manual"))
        if opts.warm_start is not None:
            out.append(_warm_start(opts.warm_start, problem))
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


def _complete(given: Mapping[str, ClassParams], problem: TuningProblem, where: str) -> dict[str, ClassParams]:
    """Parameters for every class: ``given``, else the manual setting.

    Raises:
        SedtuneInputError: ``given`` names classes the problem does not have, or a class has
            neither an entry nor a manual setting.
    """
    unknown = sorted(set(given) - set(problem.classes))
    if unknown:
        raise SedtuneInputError(
            f"{where}: classes {unknown} are not among the problem's classes {problem.classes}"
        )
    missing = [c for c in problem.classes if c not in given]
    if missing:
        no_manual = [c for c in missing if c not in problem.manual]
        if no_manual:
            raise SedtuneInputError(f"{where}: no parameters for classes {no_manual}")
        LOG.info("%s: no entry for %s; using the manual setting for them", where, missing)
    return {c: given[c] if c in given else problem.manual[c] for c in problem.classes}


def _warm_start(source: WarmStart, problem: TuningProblem) -> dict[str, ClassParams]:
    """Per-class warm-start parameters for every class of the problem (before snapping).

    Raises:
        SedtuneInputError: Unreadable file, another frame hop, unknown classes.
    """
    where = "options.warm_start"
    if isinstance(source, str):
        pf = load_params(source)
        # Kernels are in frames: another hop would mean other filter lengths.
        check_hop(pf, problem.tuning.frame_hop_s, f"{where} ({source})")
        given = pf.classes
    else:
        given = {str(k): class_params_from_json(v, f"{where}.{k}") for k, v in source.items()}
    return _complete(given, problem, where)


__all__ = [
    "DEFAULT_BUDGET",
    "BayesOptions",
    "BayesStrategy",
    "ConditionalSpace",
    "RandomOptions",
    "RandomStrategy",
    "TrialSetup",
    "TuneOptions",
    "decode",
    "encode",
    "evaluate_config",
    "param_space",
    "trial_budget",
]
