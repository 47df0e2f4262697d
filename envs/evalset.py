"""An evaluation set: a score set aligned to its ground truth, and the one way to open one.

:func:`open_eval_set` opens a score set (all its shards or some; a sed_scores_eval TSV
folder or an ``.npz`` is read through its cached Parquet conversion, :mod:`envs.scorecache`),
its ground truth and optional durations and aligns them with :func:`align`: every ground-truth
clip must have scores and every scored clip must be in the ground truth, and the classes must
agree. The result, an :class:`EvalSet`, reads class columns lazily, one class at a time;
:class:`envs.evaluator.Evaluator` scores parameters on it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt

from envs.errors import SedtuneInputError
from envs.events import ClassEvents
from envs.groundtruth import GroundTruth, read_durations, read_ground_truth
from envs.scoreset import ClassScores, ScoreSet, open_shards

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class EvalSet:
    """Ground truth and (lazily read) scores of the same clips, in ground-truth order.

    Args:
        filenames: Clip names (ground-truth order).
        classes: Class labels (score-set column order).
        frame_hop_s: Seconds per frame.
        durations_s: Per clip duration in seconds (NaN where unknown).
        refs: Per class, its reference events.
        loader: Reads one class's scores in ``filenames`` order.
        max_cached_classes: Classes kept in memory after reading (None: all). Workers that
            sweep one class after another on large sets keep only a few.
    """

    def __init__(
        self,
        filenames: Sequence[str],
        classes: Sequence[str],
        frame_hop_s: float,
        durations_s: F64,
        refs: Mapping[str, ClassEvents],
        loader: Callable[[str], ClassScores],
        max_cached_classes: int | None = None,
    ) -> None:
        self.filenames = tuple(filenames)
        self.classes = list(classes)
        self.frame_hop_s = frame_hop_s
        self.durations_s = durations_s
        self.refs = {c: refs.get(c, ClassEvents.empty()) for c in self.classes}
        self._loader = loader
        self._scores: OrderedDict[str, ClassScores] = OrderedDict()
        self.max_cached_classes = max_cached_classes

    def __len__(self) -> int:
        return len(self.filenames)

    def scores(self, label: str) -> ClassScores:
        """One class's scores (read on first use, then kept up to ``max_cached_classes``)."""
        if label in self._scores:
            self._scores.move_to_end(label)
            return self._scores[label]
        scores = self._loader(label)
        self._scores[label] = scores
        if self.max_cached_classes is not None:
            while len(self._scores) > self.max_cached_classes:
                self._scores.popitem(last=False)
        return scores

    def restricted(self, classes: Sequence[str]) -> EvalSet:
        """The same clips evaluated on a subset of the classes, in the given order."""
        return EvalSet(
            self.filenames,
            list(classes),
            self.frame_hop_s,
            self.durations_s,
            {c: self.refs[c] for c in classes},
            self.scores,
            self.max_cached_classes,
        )

    def subset(self, clip_indices: Sequence[int] | I64) -> EvalSet:
        """The same data restricted to some clips (in the given order)."""
        idx = np.asarray(clip_indices, dtype=np.int64)
        gt = GroundTruth(self.filenames, dict(self.refs)).subset(idx)
        parent = self
        return EvalSet(
            gt.filenames,
            self.classes,
            self.frame_hop_s,
            self.durations_s[idx],
            gt.events,
            lambda c: parent.scores(c).take(idx),
            self.max_cached_classes,
        )


def align(
    scores: ScoreSet,
    truth: GroundTruth,
    durations: Mapping[str, float] | None,
    where: str,
) -> EvalSet:
    """Align a score set to a ground truth, refusing any mismatch.

    Args:
        scores: Opened score set.
        truth: Ground truth.
        durations: Optional clip durations (seconds).
        where: Names the inputs in error messages.

    Returns:
        The aligned set (scores read lazily).

    Raises:
        SedtuneInputError: Clips or classes that do not match.
    """
    score_index = {n: i for i, n in enumerate(scores.filenames)}
    missing = [n for n in truth.filenames if n not in score_index]
    if missing:
        raise SedtuneInputError(
            f"{where}: clip {missing[0]!r} is in the ground truth but has no scores "
            f"({len(missing)} such clip(s))"
        )
    gt_names = set(truth.filenames)
    extra = [n for n in scores.filenames if n not in gt_names]
    if extra:
        raise SedtuneInputError(
            f"{where}: clip {extra[0]!r} has scores but is not in the ground truth "
            f"({len(extra)} such clip(s))"
        )
    unknown = [c for c in truth.labels if c not in scores.classes]
    if unknown:
        raise SedtuneInputError(
            f"{where}: ground-truth class {unknown[0]!r} is not among the score classes {scores.classes}"
        )
    absent = [c for c in scores.classes if c not in truth.events]
    if absent:
        raise SedtuneInputError(
            f"{where}: score class {absent[0]!r} has no event in the ground truth (class sets differ)"
        )
    dur = np.full(len(truth.filenames), np.nan)
    if durations is not None:
        no_dur = [n for n in truth.filenames if n not in durations]
        if no_dur:
            raise SedtuneInputError(f"{where}: clip {no_dur[0]!r} has no duration")
        dur = np.array([durations[n] for n in truth.filenames], dtype=np.float64)
    order = np.array([score_index[n] for n in truth.filenames], dtype=np.int64)
    identity = bool(np.array_equal(order, np.arange(len(order))))

    def load(label: str) -> ClassScores:
        cs = scores.read_class(label)
        return cs if identity else cs.take(order)

    return EvalSet(truth.filenames, scores.classes, scores.frame_hop_s, dur, truth.events, load)


def open_eval_set(
    scores: str,
    ground_truth: str,
    durations: str | None = None,
    *,
    where: str | None = None,
    shards: Sequence[int] | None = None,
    shard_paths: Sequence[str] | None = None,
) -> EvalSet:
    """Open a score set, its ground truth and optional durations, aligned and validated.

    Args:
        scores: Score-set URI, or a sed_scores_eval TSV folder or ``.npz``, converted
            once into a cached score set (:func:`envs.scorecache.resolve_scores`). With
            ``shards`` and ``shard_paths``, the resolved set's URI (as workers get it).
        ground_truth: Ground-truth TSV path or URI.
        durations: Durations TSV, or None (durations unknown).
        where: Field path of the data in a job spec (e.g. ``data``), or None. When given,
            an error in one file is prefixed with ``{where}.scores``, ``{where}.ground_truth``
            or ``{where}.durations``, and a mismatch between them with ``{where}``.
        shards: Read only these shards (indices into the set's shard list, see
            :func:`envs.scoreset.open_shards`), aligned to the ground truth of their clips
            only; None reads the whole set.
        shard_paths: With ``shards``: the set's shard paths in order, if known.

    Returns:
        The aligned set (scores read lazily), in ground-truth order (shard order with
        ``shards``).

    Raises:
        SedtuneInputError: A file that is missing or malformed, no such shard, or clips or
            classes that do not match.
    """

    with _prefixed(where, ".scores"):
        if shards is None:
            score_set = ScoreSet.open(scores)
        else:
            score_set = open_shards(scores, shards, shard_paths)
    with _prefixed(where, ".ground_truth"):
        truth = read_ground_truth(ground_truth)
    clip_durations = None
    if durations:
        with _prefixed(where, ".durations"):
            clip_durations = read_durations(durations)
    label = f"{scores} vs {ground_truth}"
    with _prefixed(where, ""):
        if shards is not None:
            truth = _truth_of_clips(truth, score_set.filenames, label)
            label = f"{scores} (shards {list(shards)}) vs {ground_truth}"
        return align(score_set, truth, clip_durations, label)


@contextmanager
def _prefixed(where: str | None, field: str) -> Iterator[None]:
    """Prefix an input error raised inside with ``{where}{field}`` (nothing if where is None)."""
    try:
        yield
    except SedtuneInputError as e:
        if where is None:
            raise
        raise SedtuneInputError(f"{where}{field}: {e}") from None


def _truth_of_clips(truth: GroundTruth, names: Sequence[str], where: str) -> GroundTruth:
    """The ground truth of some clips only, in their order (every clip must be in it)."""
    index = truth.index()
    unknown = [n for n in names if n not in index]
    if unknown:
        raise SedtuneInputError(
            f"{where}: clip {unknown[0]!r} has scores but is not in the ground truth "
            f"({len(unknown)} such clip(s))"
        )
    return truth.subset(np.array([index[n] for n in names], np.int64))
