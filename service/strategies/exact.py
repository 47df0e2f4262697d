"""The exact strategy: per class and per discrete setting, the exact threshold sweep.

Settings of both decoders: a ``frames`` setting sweeps frame thresholds over its level index
(:func:`envs.sweep.sweep_class`), a ``boxes`` setting detects its boxes once and sweeps the
box-confidence threshold (:func:`envs.sweep.sweep_boxes`).

The objective is separable (macro F is the mean of per-class F, and each class's F depends
only on its own parameters), so the optimum over the grid needs classes x settings sweeps,
not candidates^classes evaluations. One Ray task per (class, setting) reads only its class's
column from the shards (column projection), median-filters once, and sweeps every threshold
in one pass (:func:`envs.sweep.sweep_class`), returning counts per cross-validation fold.

Budget (full-set evaluations; evaluating one candidate for every class counts 1):

- ``budget`` None: every threshold at which a decision changes within the space's range
  is a candidate; the result is the optimum on the discrete grid, by construction, and the
  evaluations reported are settings x distinct thresholds;
- ``budget`` B: each setting gets ``floor(B / settings)`` thresholds spread evenly over the
  range (so settings x thresholds <= B); the result is the optimum on that grid.

Progress (``ctx.progress``) counts the same full-set evaluations, not tasks: a setting's cost
(:func:`setting_cost`) times the fraction of its classes swept so far, summed over settings.
It never decreases, never exceeds the budget, and its last value is the result's
``evaluations`` (a task is one class of one setting: 1 / classes of that setting's cost).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from envs.evaluator import Evaluator, MetricConfig
from envs.metrics.fscore import f_measure
from envs.problem import DataRef, TuningProblem
from envs.selection import Candidate
from envs.space import SearchSpace, Setting
from envs.sweep import sweep_boxes, sweep_class
from service.strategies.base import RunContext, Strategy, StrategyResult, Trajectory, current_node
from service.strategies.options import ExactOptions

LOG = logging.getLogger(__name__)
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SweepTask:
    """What one (class, setting) task needs; small and picklable.

    The data reference (which may list thousands of tuning clips) and the folds travel
    apart, once through the object store: inside each task's arguments they would be
    copied thousands of times into the driver's memory.
    """

    label: str
    setting: Setting
    metric: MetricConfig
    n_folds: int
    low: float
    high: float
    grid: tuple[float, ...] | None
    max_candidates: int
    cached_classes: int


@dataclass(frozen=True)
class SweepOutput:
    """A task's result: candidate thresholds with per-fold counts (n, n_folds, 3)."""

    label: str
    setting: Setting
    thresholds: F64
    counts: npt.NDArray[np.int64]
    n_decisions: int
    node: str = ""


def run_sweep_task(task: SweepTask, data: DataRef, folds: I64) -> SweepOutput:
    """Sweep one class for one setting (runs on a Ray worker or in-process).

    Args:
        task: What to sweep.
        data: The tuning data (read by this process itself: only the task's class column).
        folds: Fold id of every tuning clip.
    """
    return dataclasses.replace(_sweep(task, data, folds), node=current_node())


def _sweep(task: SweepTask, ref: DataRef, folds: I64) -> SweepOutput:
    ev = _evaluator(ref, task.metric, task.cached_classes)
    data = ev.data
    setting = task.setting
    k = setting.median_filter_frames
    boxes = setting.decoder == "boxes"
    common = (
        data.refs[task.label],
        data.frame_hop_s,
        data.durations_s,
        task.metric.t_collar_s,
        task.metric.percentage_of_length,
        setting.fill_gap_s,
        setting.min_duration_s,
    )
    if boxes:
        # Boxes are fixed per setting; every threshold of the sweep costs one pass.
        found = ev.boxes(task.label, setting.box_setting)
        res = sweep_boxes(found, *common, groups=folds, n_groups=task.n_folds)
    else:
        tg = task.grid
        index = ev.grid_levels(task.label, k, tg) if tg is not None else ev.levels(task.label, k)
        res = sweep_class(index, *common, groups=folds, n_groups=task.n_folds)
        # Keep this level index for the next settings of the same (class, kernel) (the space
        # orders settings kernel first), free every other: a worker sweeps many pairs.
        ev.retain_levels(task.label, k, tg)
    # counts[i, f] = [nref_f, nsys_f(i), ntp_f(i)] at threshold interval i.
    counts = np.empty((len(res.thresholds), task.n_folds, 3), np.int64)
    counts[:, :, 0] = res.group_nref[None, :]
    counts[:, :, 1] = res.group_nsys.T
    counts[:, :, 2] = res.group_ntp.T
    if task.grid is not None and boxes:
        # The interval [lower, upper) holding each grid threshold gives its decision.
        grid = np.asarray(task.grid)
        pos = np.clip(np.searchsorted(res.lower, grid, side="right") - 1, 0, len(res.lower) - 1)
        return SweepOutput(task.label, task.setting, grid, counts[pos], len(grid))
    if task.grid is not None:
        grid = np.asarray(task.grid)
        # On the grid index, threshold grid[j] is the level value (j + 0.5) / (len + 1); the
        # interval [lower, upper) holding it gives its decision.
        at = (np.arange(len(grid)) + 0.5) / (len(grid) + 1)
        pos = np.clip(np.searchsorted(res.lower, at, side="right") - 1, 0, len(res.lower) - 1)
        return SweepOutput(task.label, task.setting, grid, counts[pos], len(grid))
    inside = (res.thresholds >= task.low) & (res.thresholds <= task.high)
    thr, cnt = res.thresholds[inside], counts[inside]
    if len(thr) == 0:  # no decision change inside the range: its one decision at mid-range
        mid = (task.low + task.high) / 2
        mid_pos = int(np.clip(np.searchsorted(res.lower, mid, side="right") - 1, 0, len(res.lower) - 1))
        return SweepOutput(task.label, task.setting, np.array([mid]), counts[mid_pos : mid_pos + 1], 1)
    n_decisions = len(thr)
    if len(thr) > task.max_candidates:
        # Keep an even subsample plus the best threshold (the exact optimum stays a candidate).
        tot = cnt.sum(axis=1)
        best = int(np.nanargmax(np.nan_to_num(f_measure(tot[:, 0], tot[:, 1], tot[:, 2]), nan=-1)))
        keep = np.unique(
            np.concatenate((np.linspace(0, len(thr) - 1, task.max_candidates - 1).astype(int), [best]))
        )
        thr, cnt = thr[keep], cnt[keep]
    return SweepOutput(task.label, task.setting, thr, cnt, n_decisions)


_EVALUATORS: dict[tuple[DataRef, MetricConfig], Evaluator] = {}


def _evaluator(ref: DataRef, metric: MetricConfig, cached_classes: int) -> Evaluator:
    key = (ref, metric)
    if key not in _EVALUATORS:
        _EVALUATORS.clear()
        _EVALUATORS[key] = Evaluator(ref.load(max_cached_classes=cached_classes), metric)
    return _EVALUATORS[key]


def threshold_grid(space: SearchSpace, budget: float | None) -> tuple[float, ...] | None:
    """The per-setting threshold grid a budget allows (None: every decision).

    Args:
        space: The per-class space.
        budget: Full-set evaluations, at least one per setting (:meth:`ExactOptions.budget_error`).
    """
    if budget is None:
        return None
    per = math.floor(budget / len(space.settings) + 1e-9)
    if per == 1:
        return ((space.threshold_low + space.threshold_high) / 2,)
    return tuple(float(x) for x in np.linspace(space.threshold_low, space.threshold_high, per))


class ExactStrategy(Strategy):
    """Per (class, setting) exact threshold sweeps, one Ray task each."""

    name = "exact"
    Options = ExactOptions

    def run(self, problem: TuningProblem, budget: float | None, seed: int, ctx: RunContext) -> StrategyResult:
        """Sweep every (class, setting) and combine (see module docstring)."""
        opts: ExactOptions = self.options  # type: ignore[assignment]
        t0 = time.perf_counter()
        space = problem.space
        self.check_budget(budget, len(space.settings))
        grid = threshold_grid(space, budget)
        tasks = [
            SweepTask(
                c,
                s,
                problem.metric,
                problem.n_folds,
                space.threshold_low,
                space.threshold_high,
                grid,
                opts.max_candidates_per_setting,
                opts.classes_cached_per_worker,
            )
            # Class-major order: consecutive tasks of a worker tend to share a class column.
            for c in problem.classes
            for s in space.settings
        ]
        outputs = _execute(tasks, problem.data, problem.folds, ctx)
        return _combine(problem, outputs, grid, t0, ctx)


def setting_cost(outputs: list[SweepOutput], grid: tuple[float, ...] | None) -> int:
    """Full-set evaluations one setting costs: its grid's size, else its most decisions.

    Args:
        outputs: The setting's sweeps (one per class; those done so far while running).
        grid: The threshold grid, or None (every decision).
    """
    if grid is not None:
        return len(grid)
    return max((o.n_decisions for o in outputs), default=0)


class _Progress:
    """Full-set evaluations spent as sweeps finish (see the module docstring)."""

    def __init__(self, settings: tuple[Setting, ...], n_classes: int, grid: tuple[float, ...] | None) -> None:
        self.n_classes = n_classes
        self.grid = grid
        # Per setting: sweeps done, its cost so far (setting_cost of them) and its share spent.
        self.count: dict[Setting, int] = dict.fromkeys(settings, 0)
        self.cost: dict[Setting, int] = dict.fromkeys(settings, 0)
        self.share: dict[Setting, float] = dict.fromkeys(settings, 0.0)

    def add(self, output: SweepOutput) -> float:
        """Record a finished sweep; returns the evaluations spent so far (O(settings))."""
        s = output.setting
        self.count[s] += 1
        step = setting_cost([output], self.grid)
        self.cost[s] = step if self.grid is not None else max(self.cost[s], step)
        n = self.count[s]
        self.share[s] = self.cost[s] if n == self.n_classes else self.cost[s] * n / self.n_classes
        # Summed afresh in settings order: the last value equals the result's evaluations exactly.
        return sum(v for v in self.share.values() if v)


def run_sweep_batch(tasks: list[SweepTask], data: DataRef, folds: I64) -> list[SweepOutput]:
    """Several tasks of one class in one Ray task: the class is read and quantized once, and
    the per-task overhead of Ray is paid once (see :func:`run_sweep_task`)."""
    return [run_sweep_task(t, data, folds) for t in tasks]


def batches(tasks: list[SweepTask], n_cpus: int) -> list[list[SweepTask]]:
    """Consecutive tasks of one class grouped into Ray tasks.

    Groups hold about ``len(tasks) / (8 * n_cpus)`` tasks (at least one, never more than a
    class's settings), so every CPU still gets several Ray tasks to balance the load while a
    large job (thousands of (class, setting) tasks) stops paying Ray's per-task overhead and
    the class column's read and quantization once per setting.

    Args:
        tasks: Class-major tasks.
        n_cpus: CPUs of the cluster.
    """
    size = max(1, len(tasks) // (8 * max(n_cpus, 1)))
    out: list[list[SweepTask]] = []
    for t in tasks:
        if out and out[-1][0].label == t.label and len(out[-1]) < size:
            out[-1].append(t)
        else:
            out.append([t])
    return out


def _execute(tasks: list[SweepTask], data: DataRef, folds: I64, ctx: RunContext) -> list[SweepOutput]:
    """Run the tasks on Ray (in batches of one class, :func:`batches`) or in this process, in
    task order."""
    settings = tuple(dict.fromkeys(t.setting for t in tasks))
    tally = _Progress(settings, len({t.label for t in tasks}), tasks[0].grid if tasks else None)
    if not ctx.use_ray:
        out = []
        for t in tasks:
            out.append(run_sweep_task(t, data, folds))
            ctx.progress(tally.add(out[-1]))
        return out
    import ray

    remote = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(run_sweep_batch)
    data_ref, folds_ref = ray.put(data), ray.put(folds)
    groups = batches(tasks, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]
    refs = [remote.remote(g, data_ref, folds_ref) for g in groups]
    results: dict[ray.ObjectRef, list[SweepOutput]] = {}  # type: ignore[type-arg]
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for r in done:
            results[r] = ray.get(r)
            for output in results[r]:
                spent = tally.add(output)
        ctx.progress(spent)
    return [o for r in refs for o in results[r]]


def _combine(
    problem: TuningProblem,
    outputs: list[SweepOutput],
    grid: tuple[float, ...] | None,
    t0: float,
    ctx: RunContext,
) -> StrategyResult:
    classes = problem.classes
    cands: dict[str, list[Candidate]] = {c: [] for c in classes}
    best_f = {c: -np.inf for c in classes}
    best_p = {c: problem.manual[c] for c in classes}
    by_setting: dict[Setting, list[SweepOutput]] = {}
    for o in outputs:
        by_setting.setdefault(o.setting, []).append(o)
    traj = Trajectory()
    spent = 0.0
    for setting in problem.space.settings:
        outs = by_setting[setting]
        # Every class sees the same number of thresholds per setting on a grid; without a
        # grid a setting costs as many evaluations as its class with the most decisions.
        spent += setting_cost(outs, grid)
        for o in outs:
            tot = o.counts.sum(axis=1)
            f = f_measure(tot[:, 0], tot[:, 1], tot[:, 2])
            for t, cnt in zip(o.thresholds, o.counts, strict=True):
                cands[o.label].append(Candidate(setting.with_threshold(float(t)), cnt))
            if not np.isnan(f).all():
                i = int(np.nanargmax(f))
                if f[i] > best_f[o.label]:
                    best_f[o.label], best_p[o.label] = (
                        float(f[i]),
                        setting.with_threshold(float(o.thresholds[i])),
                    )
        known = [v for v in best_f.values() if np.isfinite(v)]
        traj.add(spent, float(np.mean(known)) if known else float("nan"))
    info = {
        "settings": len(problem.space.settings),
        "tasks": len(outputs),
        "thresholds_per_setting": len(grid) if grid is not None else "all",
        "nodes": sorted({o.node for o in outputs if o.node}),
    }
    return StrategyResult("exact", best_p, cands, traj.points, spent, time.perf_counter() - t0, info=info)
