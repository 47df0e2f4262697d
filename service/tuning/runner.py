"""The job runner: splits, strategies, selection, held-out scores, outputs.

For every seeded split of the clips into tuning and held-out parts (or a separate held-out
set), every strategy of the job searches the tuning clips; its evaluated candidates become
two recommendations, ``naive`` (best tuning F) and ``robust`` (:mod:`envs.selection`), and
both are scored on the held-out clips with a paired bootstrap interval of the gain over the
manual setting. A strategy without robust selection (manual) gives one row, ``fixed``; a
strategy may add read-outs of its own, scored the same way after those rows: static tables
(``StrategyResult.readouts``; rl: its untrained policy's, ``untrained``) and clip-adaptive
policies (``StrategyResult.policies``; rl: ``adaptive`` and ``untrained_adaptive``). The
recommendation is the row with the best mean held-out F among the job's selection mode,
with a plain statement when no strategy beats manual significantly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from envs.evaluator import Evaluator
from envs.fingerprint import dataset_fingerprint
from envs.heldout import (
    ClipCounts,
    GainInterval,
    class_f,
    class_figures,
    clip_counts,
    clip_counts_of_events,
    gain_interval,
    macro_f,
)
from envs.metrics.fscore import f_measure
from envs.params import ClassParams
from envs.problem import DataRef, TuningProblem, fold_counts
from envs.selection import Candidate, select_robust
from envs.split import split_names
from service.strategies.base import RunContext, Strategy, StrategyResult, TrajectoryPoint, evaluate_joint
from service.tuning import interrupt, ray_stop
from service.tuning.check import DRIVER_CACHED_CLASSES, ResolvedJob, check_job
from service.tuning.spec import JobSpec

LOG = logging.getLogger(__name__)


@dataclass
class Outcome:
    """One (strategy, selection) on one split."""

    strategy: str
    selection: str
    params: dict[str, ClassParams] | None
    tuning_f: float
    heldout_f: float
    tuning_class_f: dict[str, float]
    heldout_class_f: dict[str, float]
    heldout_counts: ClipCounts
    tuning_class: dict[str, dict[str, float]]
    heldout_class: dict[str, dict[str, float]]
    evaluations: float
    wall_s: float
    trajectory: list[TrajectoryPoint]


@dataclass
class Row:
    """One line of the comparison table (aggregated over splits)."""

    strategy: str
    selection: str
    tuning_f_mean: float
    tuning_f_std: float
    heldout_f_mean: float
    heldout_f_std: float
    gain: GainInterval
    evaluations: float
    wall_s: float
    heldout_class_f: dict[str, float]
    tuning_class_f: dict[str, float]
    params: dict[str, ClassParams] | None
    trajectory: list[TrajectoryPoint]
    heldout_class: dict[str, dict[str, float]] = field(default_factory=dict)
    tuning_class: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``strategy/selection``."""
        return f"{self.strategy}/{self.selection}"


@dataclass
class JobResult:
    """Everything a job produced."""

    spec: JobSpec
    rows: list[Row]
    recommended: Row
    message: str
    classes: list[str]
    frame_hop_s: float
    splits: int
    output_dir: str
    wall_s: float
    artifacts: dict[str, str] = field(default_factory=dict)
    results: dict[str, list[StrategyResult]] = field(default_factory=dict)
    fingerprint: str = ""
    job_id: str = ""


ProgressFactory = Callable[[str, float | None], Callable[[float], None]]
StrategyDone = Callable[[str, StrategyResult], None]


def _no_progress(name: str, total: float | None) -> Callable[[float], None]:
    return lambda _: None


def init_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to a cluster (``address``) or start local Ray; returns True if started here.

    Inside :func:`service.tuning.interrupt.interruptible`, a signal during ``ray.init`` stops
    the run (:class:`~service.tuning.interrupt.Interrupted`, with Ray shut down again), and the
    interrupt handlers are put back afterwards: ``ray.init`` replaces the SIGTERM handler
    with one that calls ``sys.exit``.
    """
    import ray

    ray_stop.wait()  # a background shutdown of an earlier run's instance
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    except BaseException as e:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if isinstance(e, SystemExit) and interrupt.active():  # Ray's own SIGTERM handler
            raise interrupt.stop(signal.SIGTERM) from None
        raise
    try:
        interrupt.reinstall()
    except interrupt.Interrupted:
        ray.shutdown()
        raise
    return True


def run_job(
    spec: JobSpec,
    address: str | None = None,
    use_ray: bool = True,
    progress: ProgressFactory = _no_progress,
    resolved: ResolvedJob | None = None,
    job_id: str | None = None,
    on_strategy_done: StrategyDone | None = None,
) -> JobResult:
    """Run a job end to end (validation first, so bad specs never reach Ray).

    Args:
        spec: The job spec.
        address: Ray address (overrides ``spec.resources.address``); None and no address in
            the spec starts a local Ray.
        use_ray: False runs everything in this process (exact and manual only).
        progress: Makes a progress callback per strategy (name, total evaluations).
        resolved: An already validated job (skips :func:`check_job`).
        job_id: The job's id (default: ``$SEDTUNE_JOB_ID`` or a new one).
        on_strategy_done: Called with (spec entry name, result) when a strategy ends a split.
    """
    job = resolved or check_job(spec)
    t0 = time.perf_counter()
    started = False
    if use_ray:
        started = init_ray(address or spec.resources.address, spec.resources.num_cpus)
    try:
        outcomes, results = _run_splits(job, use_ray, progress, on_strategy_done)
    except BaseException:
        if started:
            ray_stop.stop(now=True)
        raise
    if started:
        ray_stop.stop()
    rows = _aggregate(job, outcomes)
    recommended, message = recommend(rows, spec.selection)
    return JobResult(
        spec,
        rows,
        recommended,
        message,
        job.classes,
        job.data.frame_hop_s,
        spec.heldout.splits if job.heldout_data is None else 1,
        spec.output_dir,
        time.perf_counter() - t0,
        results=results,
        fingerprint=dataset_fingerprint(
            (p.scores, p.ground_truth, p.durations) for p in (spec.data, spec.heldout.data) if p is not None
        ),
        job_id=job_id or os.environ.get("SEDTUNE_JOB_ID", "") or uuid.uuid4().hex[:12],
    )


def _run_splits(
    job: ResolvedJob, use_ray: bool, progress: ProgressFactory, on_strategy_done: StrategyDone | None
) -> tuple[list[list[Outcome]], dict[str, list[StrategyResult]]]:
    spec = job.spec
    n_splits = spec.heldout.splits if job.heldout_data is None else 1
    all_outcomes: list[list[Outcome]] = []
    results: dict[str, list[StrategyResult]] = {}
    for k in range(n_splits):
        seed = spec.heldout.seed + k
        if job.heldout_data is None:
            tune_idx, held_idx = split_names(job.data.filenames, spec.heldout.fraction, seed)
            tuning_names = tuple(job.data.filenames[i] for i in tune_idx)
            heldout = job.data.subset(held_idx)
        else:
            tuning_names, heldout = None, job.heldout_data
        ref = DataRef(
            spec.data.scores, spec.data.ground_truth, spec.data.durations, tuning_names, tuple(job.classes)
        )
        problem = TuningProblem(
            ref, ref.load(DRIVER_CACHED_CLASSES), job.space, job.metric, job.manual, spec.folds, spec.seed + k
        )
        held_ev = Evaluator(heldout, job.metric)
        manual_counts = fold_counts(problem.evaluator, job.manual, problem.folds, problem.n_folds)
        manual_cands = {c: Candidate(job.manual[c], manual_counts[c]) for c in job.classes}
        outcomes = []
        for name, budget, strategy in job.strategies:
            LOG.info("split %d: running %s (budget %s)", k, name, budget)
            workdir = os.path.join(spec.output_dir, "work", f"split{k}", name)
            os.makedirs(workdir, exist_ok=True)
            ctx = RunContext(workdir, progress(f"{name} (split {k + 1}/{n_splits})", budget), use_ray)
            res = strategy.run(problem, budget, spec.seed + k, ctx)
            # A strategy that returned after a signal (Ray Tune ends its loop on SIGINT and
            # returns the trials done so far, unless its handler is off) did not finish.
            interrupt.reinstall()
            results.setdefault(name, []).append(res)
            if on_strategy_done is not None:
                on_strategy_done(name, res)
            outcomes += _score(problem, held_ev, strategy, res, manual_cands)
        all_outcomes.append(outcomes)
    return all_outcomes, results


def _score(
    problem: TuningProblem,
    held_ev: Evaluator,
    strategy: Strategy,
    res: StrategyResult,
    manual_cands: dict[str, Candidate],
) -> list[Outcome]:
    """One outcome per read-out of ``res``, on the tuning and the held-out clips.

    Rows, in order: ``naive`` and ``robust`` (selected from the candidates), or ``fixed`` for a
    strategy without robust selection; then ``res.readouts`` and ``res.policies``, in their order.
    """
    picks: list[tuple[str, dict[str, ClassParams]]]
    if strategy.robust_selection:
        robust, report = select_robust(res.candidates, manual_cands)
        res.info["selection"] = {
            "width": report.width,
            "kernel_width": report.kernel_width,
            "merge_width": report.merge_width,
            "shrunk": report.shrunk,
            "cv_macro_f": report.cv_macro_f,
        }
        picks = [("naive", res.naive), ("robust", robust)]
    else:
        picks = [("fixed", res.naive)]
    picks.extend(res.readouts.items())
    out = []
    for selection, params in picks:
        tuning_f, counts = evaluate_joint(problem, params)
        tc = {c: float(_f(v)) for c, v in counts.items()}
        hc = clip_counts(held_ev, params)
        out.append(
            Outcome(
                res.strategy,
                selection,
                params,
                tuning_f,
                macro_f(hc),
                tc,
                class_f(hc),
                hc,
                class_figures(counts),
                class_figures(hc),
                res.evaluations,
                res.wall_s,
                res.trajectory,
            )
        )
    for selection, policy in res.policies.items():
        tuning_counts = clip_counts_of_events(problem.evaluator, policy.events(problem.tuning))
        hc = clip_counts_of_events(held_ev, policy.events(held_ev.data))
        out.append(
            Outcome(
                res.strategy,
                selection,
                None,
                macro_f(tuning_counts),
                macro_f(hc),
                class_f(tuning_counts),
                class_f(hc),
                hc,
                class_figures(tuning_counts),
                class_figures(hc),
                res.evaluations,
                res.wall_s,
                res.trajectory,
            )
        )
    return out


def _f(v: np.ndarray) -> float:
    """Class F of per-clip (or per-fold) counts summed."""
    return float(f_measure(*v.sum(axis=0)))


def _aggregate(job: ResolvedJob, outcomes: list[list[Outcome]]) -> list[Row]:
    spec = job.spec
    # Manual on each split's held-out clips, for the gain intervals.
    manual_held = [
        next(o for o in split if o.strategy == "manual")
        if any(o.strategy == "manual" for o in split)
        else None
        for split in outcomes
    ]
    keys = list(dict.fromkeys((o.strategy, o.selection) for split in outcomes for o in split))
    rows = []
    for strat, sel in keys:
        per = [next(o for o in split if (o.strategy, o.selection) == (strat, sel)) for split in outcomes]
        if all(m is not None for m in manual_held):
            gain = gain_interval(
                [(o.heldout_counts, m.heldout_counts) for o, m in zip(per, manual_held, strict=True) if m],
                spec.bootstrap,
                spec.seed,
            )
        else:
            gain = GainInterval(float("nan"), float("nan"), float("nan"))
        tf = np.array([o.tuning_f for o in per])
        hf = np.array([o.heldout_f for o in per])
        rows.append(
            Row(
                strat,
                sel,
                float(tf.mean()),
                float(tf.std()),
                float(hf.mean()),
                float(hf.std()),
                gain,
                float(np.mean([o.evaluations for o in per])),
                float(np.mean([o.wall_s for o in per])),
                _mean_dicts([o.heldout_class_f for o in per]),
                _mean_dicts([o.tuning_class_f for o in per]),
                per[0].params,
                per[0].trajectory,
                _mean_figures([o.heldout_class for o in per]),
                _mean_figures([o.tuning_class for o in per]),
            )
        )
    return rows


def _mean_dicts(ds: list[dict[str, float]]) -> dict[str, float]:
    return {
        k: float(np.nanmean([d[k] for d in ds])) if not all(np.isnan(d[k]) for d in ds) else float("nan")
        for k in ds[0]
    }


def _mean_figures(ds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {c: _mean_dicts([d[c] for d in ds]) for c in ds[0]}


def recommend(rows: list[Row], selection: str) -> tuple[Row, str]:
    """The row to take (best mean held-out F of the job's selection mode) and a statement."""
    eligible = [r for r in rows if r.selection in (selection, "fixed") and r.params is not None]
    eligible = eligible or [r for r in rows if r.params is not None]
    best = max(eligible, key=lambda r: (np.nan_to_num(r.heldout_f_mean, nan=-1.0), -r.evaluations))
    manual = next((r for r in rows if r.strategy == "manual"), None)
    if best.strategy == "manual" or manual is None:
        msg = f"Recommended: {best.key} (held-out macro F1 {best.heldout_f_mean:.4f})."
        if manual is not None:
            msg += " No strategy beat the manual setting on held-out clips."
        return best, msg
    g = best.gain
    if g.significant:
        msg = (
            f"Recommended: {best.key}: held-out macro F1 {best.heldout_f_mean:.4f}, "
            f"{100 * g.gain:+.2f} points over manual (95% CI {100 * g.low:+.2f} to {100 * g.high:+.2f})."
        )
    else:
        msg = (
            f"No strategy beats manual significantly on held-out clips: the best, {best.key}, gains "
            f"{100 * g.gain:+.2f} points (95% CI {100 * g.low:+.2f} to {100 * g.high:+.2f}). "
            "Tuning does not clearly pay here; its parameters are written, "
            "but manual is as good within noise."
        )
    return best, msg
