"""Semantic validation of a job spec, before any Ray work: files, clips, classes, budgets.

Structural errors (strategy options included) are caught by :mod:`service.tuning.spec`; this
module opens the data (shard footers and clip names, the ground truth, the durations), aligns
them, and applies every strategy's budget rule, all with field paths in the messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envs.errors import SedtuneInputError
from envs.evalset import EvalSet, open_eval_set
from envs.evaluator import MetricConfig
from envs.params import ClassParams
from envs.space import SearchSpace, kernels_for_seconds
from service.strategies.base import Strategy, strategy_class
from service.tuning.spec import DataSpec, JobSpec

DRIVER_CACHED_CLASSES = 16


@dataclass
class ResolvedJob:
    """A validated job, ready to run.

    Attributes:
        spec: The spec.
        data: The tuning data (aligned; class columns read lazily).
        heldout_data: A separate held-out set, or None to split ``data``.
        classes: Classes tuned.
        space: The search space.
        metric: The metric.
        manual: The manual setting per class.
        strategies: (spec entry name, budget, strategy instance), in spec order.
    """

    spec: JobSpec
    data: EvalSet
    heldout_data: EvalSet | None
    classes: list[str]
    space: SearchSpace
    metric: MetricConfig
    manual: dict[str, ClassParams]
    strategies: Sequence[tuple[str, float | None, Strategy]]


def _open(data: DataSpec, where: str) -> EvalSet:
    """Open and align a spec's data, errors prefixed with the field path ``where``."""
    return open_eval_set(data.scores, data.ground_truth, data.durations, where=where)


def check_job(spec: JobSpec) -> ResolvedJob:
    """Validate everything a job needs; raise with the field path of the first problem.

    Raises:
        SedtuneInputError: Missing files, mismatched clips or classes, unknown classes in
            ``data.classes``, a budget its strategy's options refuse.
    """
    data = _open(spec.data, "data")
    classes = list(data.classes)
    if spec.data.classes is not None:
        for i, c in enumerate(spec.data.classes):
            if c not in data.classes:
                raise SedtuneInputError(
                    f"data.classes[{i}]: unknown class {c!r}; score classes: {data.classes}"
                )
        classes = list(dict.fromkeys(spec.data.classes))
        data = data.restricted(classes)
    heldout = None
    if spec.heldout.data is not None:
        heldout = _open(spec.heldout.data, "heldout.data")
        missing = [c for c in classes if c not in heldout.classes]
        if missing:
            raise SedtuneInputError(f"heldout.data: class {missing[0]!r} is not in the held-out scores")
        if heldout.frame_hop_s != data.frame_hop_s:
            raise SedtuneInputError(
                f"heldout.data: frame_hop_s {heldout.frame_hop_s} differs from the tuning set's "
                f"{data.frame_hop_s}"
            )
        heldout = heldout.restricted(classes)
    elif len(data) < 4:
        raise SedtuneInputError(
            f"data: {len(data)} clips are too few to split into tuning and held-out parts"
        )
    space = spec.space.to_space().validate("space")
    metric = MetricConfig(spec.metric.t_collar_s, spec.metric.percentage_of_length).validate("metric")
    k = kernels_for_seconds(spec.manual.median_filter_s, data.frame_hop_s)
    manual = {
        c: ClassParams(median_filter_frames=k, threshold=spec.manual.threshold).validate("manual")
        for c in classes
    }
    strategies = []
    for i, s in enumerate(spec.strategies):
        # Options were validated with the spec; each options model owns its budget rule.
        error = s.options.budget_error(s.budget, len(space.settings))
        if error is not None:
            raise SedtuneInputError(f"strategies[{i}].budget: {error}")
        strategies.append((s.name, s.budget, strategy_class(s.name)(s.options)))
    # The driver evaluates every class (manual, held-out scores) one after another: keep a
    # few columns in memory, not all of a 400-class set.
    data.max_cached_classes = DRIVER_CACHED_CLASSES
    if heldout is not None:
        heldout.max_cached_classes = DRIVER_CACHED_CLASSES
    return ResolvedJob(spec, data, heldout, classes, space, metric, manual, strategies)
