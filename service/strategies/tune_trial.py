"""One Tune trial, on its worker: evaluate one joint configuration on the tuning clips.

The function trainable (:func:`trainable`) receives the configuration (flat keys by class
index, :func:`service.strategies.search_codec.param_space`) and, through
``tune.with_parameters``, a small :class:`TrialSetup` (the :class:`envs.problem.DataRef`, the
metric, the fold ids of the tuning clips, the space). On its worker it loads the data by
reference (cached per process by ``DataRef.load``), keeps one :class:`envs.evaluator.Evaluator`
per process (so a reused actor keeps its median-filter caches), and reports the macro F
(``"f"``) and the per-class fold counts with ``ray.tune.report``. Score arrays never travel
through Ray.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.evaluator import Evaluator, MetricConfig
from envs.problem import DataRef, fold_counts, macro_from_counts
from envs.space import SearchSpace
from service.strategies.base import current_node
from service.strategies.search_codec import decode

LOG = logging.getLogger(__name__)


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


def trainable(config: dict[str, Any], setup: TrialSetup) -> None:
    """Tune function trainable: one full-set evaluation, reported once."""
    from ray import tune

    _fail_once(setup.fault_marker)
    t0 = time.perf_counter()
    out = evaluate_config(setup, config)
    # Diagnostics: seconds spent evaluating, the worker process (shows actor reuse) and node.
    out.update(eval_s=time.perf_counter() - t0, pid=os.getpid(), node=current_node())
    tune.report(out)
