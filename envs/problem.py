"""A tuning problem: what every strategy searches, and how its candidates are scored.

The problem holds the tuning clips (an :class:`envs.evalset.EvalSet`), the search space,
the metric, the manual reference setting and the cross-validation folds of the tuning clips.
:class:`DataRef` is the small, picklable description of the same data that Ray workers use to
read the shards themselves (nothing but names and paths travels to them).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from envs.evalset import EvalSet, open_eval_set
from envs.evaluator import Evaluator, MetricConfig
from envs.params import ClassParams
from envs.scorecache import resolve_scores
from envs.space import SearchSpace
from envs.split import fold_ids

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DataRef:
    """Where a set's data lives, and which of its clips form the tuning part.

    Attributes:
        scores: Score-set URI. Given a sed_scores_eval TSV folder or an ``.npz``, the
            reference holds the path of its cached Parquet set instead
            (:func:`envs.scorecache.resolve_scores`, converting once on the process that
            builds the reference), so workers that unpickle it read that set and never
            convert again.
        ground_truth: Ground-truth TSV path or URI.
        durations: Durations TSV, or None.
        clips: Clip names of the part, in order (None = every ground-truth clip).
        classes: Classes evaluated (None = all of the score set's).

    Raises:
        SedtuneInputError: Scores in a form that cannot be converted (import's error).
    """

    scores: str
    ground_truth: str
    durations: str | None
    clips: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Unpickling does not call this: a worker keeps the driver's resolved path.
        object.__setattr__(self, "scores", resolve_scores(self.scores))

    def load(self, max_cached_classes: int | None = None) -> EvalSet:
        """Open and align the data (on whichever process calls it), restricted to ``clips``.

        Args:
            max_cached_classes: Class columns kept in memory once read (None: all); workers
                that go through hundreds of classes keep a few.
        """
        return _load_cached(self, max_cached_classes)


@functools.lru_cache(maxsize=4)
def _load_cached(ref: DataRef, max_cached_classes: int | None) -> EvalSet:
    # Cached per process: Tune reuses actors and RLlib env runners live long, so a worker
    # reads its data once.
    full = open_eval_set(ref.scores, ref.ground_truth, ref.durations)
    if ref.classes is not None:
        full.max_cached_classes = 0  # the restricted view below keeps the columns
        full = full.restricted(ref.classes)
    if ref.clips is None:
        full.max_cached_classes = max_cached_classes
        return full
    # The full set only feeds the subset: keep no columns there, so memory holds one copy.
    full.max_cached_classes = 0
    index = {n: i for i, n in enumerate(full.filenames)}
    part = full.subset(np.array([index[n] for n in ref.clips], dtype=np.int64))
    part.max_cached_classes = max_cached_classes
    return part



@dataclass
class TuningProblem:
    """What a strategy tunes.

    Attributes:
        data: Reference to the tuning clips (for workers).
        tuning: The tuning clips, loaded in this process.
        space: Per-class search space.
        metric: Collars.
        manual: The manual reference parameters per class.
        n_folds: Cross-validation folds of the tuning clips (for robust selection).
        seed: Seed of the problem (fold assignment).
    """

    data: DataRef
    tuning: EvalSet
    space: SearchSpace
    metric: MetricConfig
    manual: dict[str, ClassParams]
    n_folds: int = 5
    seed: int = 0
    folds: I64 = field(init=False)
    _evaluator: Evaluator | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.folds = fold_ids(len(self.tuning), self.n_folds, self.seed)

    @property
    def classes(self) -> list[str]:
        """Class labels."""
        return self.tuning.classes

    @property
    def evaluator(self) -> Evaluator:
        """A cached evaluator on the tuning clips."""
        if self._evaluator is None:
            self._evaluator = Evaluator(self.tuning, self.metric)
        return self._evaluator


def fold_counts(
    evaluator: Evaluator, params: Mapping[str, ClassParams], folds: I64, n_folds: int
) -> dict[str, npt.NDArray[np.int64]]:
    """Per class, [nref, nsys, ntp] per fold (array (n_folds, 3))."""
    return {c: evaluator.class_counts_by_group(c, params[c], folds, n_folds) for c in params}


def macro_from_counts(counts: Mapping[str, npt.NDArray[np.int64]]) -> float:
    """Macro F of totals over all folds (sed_eval semantics)."""
    from envs.metrics.fscore import macro_f_of_totals

    return macro_f_of_totals(c.sum(axis=0) for c in counts.values())
