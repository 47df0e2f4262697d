"""The fast evaluator: an aligned set (:mod:`envs.evalset`) evaluated per class.

:class:`Evaluator` scores per-class parameters with sed_eval's semantics (see
:mod:`envs.metrics`) on an :class:`envs.evalset.EvalSet`, whose class columns are read
lazily, one class at a time. The filtered scores and their level index are cached per
(class, kernel), so a search that revisits a kernel pays for the median filter once.
Decoding goes through :class:`envs.levels.LevelIndex`; the frame-level path of
:mod:`envs.stack` (used by ``apply``) is tested equal to it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from envs.boxes import Boxes, ChangeBoxes, box_events, change_boxes, merge_boxes
from envs.errors import SedtuneInputError
from envs.evalset import EvalSet
from envs.events import ClassEvents
from envs.kernels import (
    block_runs,
    clean_decode,
    hysteresis_runs,
    majority_hysteresis_runs,
    majority_runs,
)
from envs.levels import LevelIndex
from envs.matching import group_counts, level_counts
from envs.metrics.counts import Counts
from envs.metrics.event_based import ref_first
from envs.metrics.fscore import class_f_measure, macro_f_measure, precision, recall
from envs.metrics.segment_based import segment_counts
from envs.params import BoxSetting, ClassParams
from envs.stack import median_filter_levels, median_filter_values

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class MetricConfig:
    """How events are scored.

    Attributes:
        t_collar_s: Onset/offset collar (seconds).
        percentage_of_length: Offset tolerance as a fraction of the reference length.
        segment_s: Segment length of the segment-based metric (seconds).
    """

    t_collar_s: float = 0.2
    percentage_of_length: float = 0.2
    segment_s: float = 1.0

    def validate(self, where: str = "metric") -> MetricConfig:
        """Check ranges; return self."""
        # sed_eval refuses a collar of 0 (it must be a float > 0); so does sedtune.
        if not (math.isfinite(self.t_collar_s) and self.t_collar_s > 0):
            raise SedtuneInputError(f"{where}.t_collar_s must be > 0, but got {self.t_collar_s!r}")
        if not (0 <= self.percentage_of_length <= 1):
            raise SedtuneInputError(
                f"{where}.percentage_of_length must be in [0, 1], but got {self.percentage_of_length!r}"
            )
        if not self.segment_s > 0:
            raise SedtuneInputError(f"{where}.segment_s must be > 0, but got {self.segment_s!r}")
        return self


K = TypeVar("K")
V = TypeVar("V")


#: Up to this many distinct values, a class's ranks are median-filtered with a running
#: histogram (:func:`envs.stack.median_filter_levels`) instead of scipy's rank filter.
SMALL_ALPHABET = 256


class _Lru(Generic[K, V]):
    """A small least-recently-used cache (unbounded when ``size`` is None)."""

    def __init__(self, size: int | None) -> None:
        self.size = size
        self._d: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        if key in self._d:
            self._d.move_to_end(key)
            return self._d[key]
        return None

    def put(self, key: K, value: V) -> None:
        self._d[key] = value
        if self.size is not None:
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()

    def retain(self, key: K) -> None:
        """Forget every entry but ``key``'s."""
        kept = self._d.get(key)
        self._d.clear()
        if kept is not None:
            self._d[key] = kept


@dataclass(frozen=True)
class ClassResult:
    """One class's figures."""

    counts: Counts
    f_measure: float
    precision: float
    recall: float

    @staticmethod
    def of(c: Counts) -> ClassResult:
        """Figures from counts (sed_eval formulas)."""
        return ClassResult(c, class_f_measure(c), precision(c), recall(c))


@dataclass(frozen=True)
class Evaluation:
    """Per-class results and the macro F (class-wise average, NaN classes dropped)."""

    per_class: dict[str, ClassResult]
    macro_f: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "macro_f", macro_f_measure([r.f_measure for r in self.per_class.values()]))


class Evaluator:
    """Evaluates per-class stack parameters on an :class:`EvalSet`.

    Args:
        data: The aligned set.
        metric: Collars and segment length.
    """

    def __init__(self, data: EvalSet, metric: MetricConfig | None = None) -> None:
        self.data = data
        self.metric = (metric or MetricConfig()).validate()
        # Bounded like the set's class cache: a worker sweeping hundreds of classes of a large
        # set must not keep every class's ranks and indexes.
        n = data.max_cached_classes
        self._ranked: _Lru[str, tuple[F64, I64]] = _Lru(None if n is None else max(n, 1))
        self._levels: _Lru[tuple[object, ...], LevelIndex] = _Lru(None if n is None else max(n, 1) * 32)
        self._quantized: _Lru[tuple[str, tuple[float, ...]], I64] = _Lru(None if n is None else max(n, 1))
        self._boxes: _Lru[tuple[str, BoxSetting], Boxes] = _Lru(None if n is None else max(n, 1) * 64)
        self._changes: _Lru[tuple[str, int, float], ChangeBoxes] = _Lru(None if n is None else max(n, 1) * 8)
        # (class, kernel) pairs evaluated once without an index (the next use builds it).
        self._direct: set[tuple[str, int]] = set()
        self._durations = np.ascontiguousarray(data.durations_s, np.float64)
        self._refs: dict[str, tuple[I64, F64, F64]] = {}
        self._one_group = np.zeros(len(data), np.int64)

    def ranked(self, label: str) -> tuple[F64, I64]:
        """A class's sorted distinct values and every frame's rank among them (cached)."""
        hit = self._ranked.get(label)
        if hit is None:
            values, rank = np.unique(self.data.scores(label).values.astype(np.float64), return_inverse=True)
            hit = (values, rank.astype(np.int64))
            self._ranked.put(label, hit)
        return hit

    def levels(self, label: str, kernel_frames: int) -> LevelIndex:
        """Level index of the class's scores filtered with ``kernel_frames`` (cached).

        The ranks are filtered instead of the values: a median commutes with the monotone
        map value -> rank, so this equals indexing the filtered values.
        """
        key = (label, kernel_frames)
        hit = self._levels.get(key)
        if hit is None:
            values, _ = self.ranked(label)
            filtered = self.filtered_ranks(label, kernel_frames)
            hit = LevelIndex.from_ranks(filtered, values, self.data.scores(label).offsets)
            self._levels.put(key, hit)
        return hit

    def drop_levels(self) -> None:
        """Forget the cached level indexes (:meth:`levels`); scores and ranks stay cached.

        A worker that sweeps many (class, kernel) pairs, each once, frees each index after use.
        """
        self._levels.clear()

    def retain_levels(self, label: str, kernel_frames: int, grid: Sequence[float] | None = None) -> None:
        """Forget every cached level index but this one (:meth:`levels` or :meth:`grid_levels`).

        A worker sweeps the settings of one (class, kernel) one after another (gap filling x
        minimum duration, say), then moves on: it keeps the index it is using and frees the
        rest, so a large set never holds more than one index per worker.
        """
        key = (label, kernel_frames) if grid is None else self._grid_key(label, kernel_frames, grid)
        self._levels.retain(key)

    @staticmethod
    def _grid_key(label: str, kernel_frames: int, grid: Sequence[float]) -> tuple[object, ...]:
        return (label, kernel_frames, tuple(float(x) for x in grid))

    def filtered_ranks(self, label: str, kernel_frames: int) -> I64:
        """Every frame's rank among :meth:`ranked` values after median filtering (not cached)."""
        values, rank = self.ranked(label)
        offsets = self.data.scores(label).offsets
        if len(values) <= SMALL_ALPHABET:  # few distinct values (quantized scores): a histogram
            return median_filter_levels(rank, offsets, kernel_frames, len(values))
        return median_filter_values(rank, offsets, kernel_frames)

    def grid_levels(self, label: str, kernel_frames: int, grid: Sequence[float]) -> LevelIndex:
        """Level index of ``q(p)``: how many of the ascending ``grid`` thresholds lie below p.

        ``p > grid[j]`` holds exactly when ``q(p) >= j + 1``, and q is monotone, so it commutes
        with the median filter; the index's values are ``j / (len(grid) + 1)``, and its runs
        at ``(j + 0.5) / (len(grid) + 1)`` are the runs at threshold ``grid[j]``. Sweeping it
        costs per clip as many levels as the grid has, not as many as the clip has values.
        """
        g = np.asarray(grid, np.float64)
        index_key = self._grid_key(label, kernel_frames, grid)
        hit = self._levels.get(index_key)
        if hit is not None:
            return hit
        scores = self.data.scores(label)
        key = (label, tuple(g.tolist()))
        q = self._quantized.get(key)
        if q is None:
            q = np.searchsorted(g, scores.values.astype(np.float64), side="left").astype(np.int64)
            self._quantized.put(key, q)
        filtered = median_filter_levels(q, scores.offsets, kernel_frames, len(g) + 1)
        levels = np.arange(len(g) + 1, dtype=np.float64) / (len(g) + 1)
        hit = LevelIndex.from_ranks(filtered, levels, scores.offsets)
        self._levels.put(index_key, hit)
        return hit

    def boxes(self, label: str, setting: BoxSetting) -> Boxes:
        """A class's candidate boxes under a box setting (cached; ``boxes`` decoder)."""
        key = (label, setting)
        hit = self._boxes.get(key)
        if hit is None:
            # Detection is shared by the merge criteria and confidences of one step filter.
            ckey = (label, setting.median_filter_frames, setting.step_filter_s)
            found = self._changes.get(ckey)
            if found is None:
                scores = self.data.scores(label)
                found = change_boxes(
                    scores.values, scores.offsets, self.data.frame_hop_s, ckey[1], setting.step_filter_s
                )
                self._changes.put(ckey, found)
            hit = merge_boxes(found, setting)
            self._boxes.put(key, hit)
        return hit

    def events(self, label: str, params: ClassParams) -> ClassEvents:
        """A class's events under ``params`` (either decoder)."""
        hop = self.data.frame_hop_s
        if params.decoder == "boxes":
            return box_events(
                self.boxes(label, params.box_setting),
                params.threshold,
                hop,
                self.data.durations_s,
                params.fill_gap_s,
                params.min_duration_s,
            )
        start, end, offsets = self._runs(label, params, self._index_for(label, params))
        clip, onset, offset = clean_decode(
            start, end, offsets, hop, float(params.fill_gap_s), float(params.min_duration_s), self._durations
        )
        return ClassEvents(clip, onset, offset)

    def _runs(self, label: str, params: ClassParams, index: LevelIndex | None) -> tuple[I64, I64, I64]:
        """The active runs of a ``frames`` class (global frames) and the clip offsets.

        Args:
            label: Class label.
            params: Its parameters.
            index: The class's level index for the kernel, or None to decide directly.
        """
        k = params.median_filter_frames
        on, off = float(params.threshold), params.threshold_off
        if index is None:
            scores = self.data.scores(label)
            if off is None:
                start, end = majority_runs(scores.values, scores.offsets, on, k)
            else:
                start, end = majority_hysteresis_runs(scores.values, scores.offsets, on, float(off), k)
            return start, end, scores.offsets
        start, end = block_runs(index.blocks, index.level(on))
        if off is not None:
            s_off, e_off = block_runs(index.blocks, index.level(float(off)))
            start, end = hysteresis_runs(s_off, e_off, start)
        return start, end, index.offsets

    def _index_for(self, label: str, params: ClassParams) -> LevelIndex | None:
        """The level index to decide a ``frames`` class with, or None: decide it directly.

        The first evaluation of a (class, kernel) filters and thresholds in one pass
        (:func:`envs.kernels.majority_runs`); from the second on, the class's level index is
        built and kept, and every threshold costs one pass over its edges. Clips no longer
        than the half window reflect more than once (scipy's own way): such sets always take
        the index, built with scipy's filter.
        """
        k = params.median_filter_frames
        index = self._levels.get((label, k))
        if index is not None:
            return index
        if (label, k) not in self._direct:
            lengths = np.diff(self.data.scores(label).offsets)
            if int(lengths[lengths > 0].min(initial=k)) > k // 2:
                self._direct.add((label, k))
                return None
        index = self.levels(label, k)
        index.blocks  # noqa: B018 - built with the index: every threshold of a search uses them
        return index

    def class_counts(self, label: str, params: ClassParams) -> Counts:
        """Event-based counts of one class."""
        out = self.class_counts_by_group(label, params, self._one_group, 1)
        return Counts(int(out[0, 0]), int(out[0, 1]), int(out[0, 2]))

    def class_counts_by_group(
        self, label: str, params: ClassParams, groups: I64, n_groups: int
    ) -> npt.NDArray[np.int64]:
        """Event-based counts of one class split by clip groups (folds, or one group per clip).

        Matching never crosses clips, so group totals add up to :meth:`class_counts`.

        Args:
            label: Class label.
            params: The class's parameters.
            groups: Group id of every clip (``len(data)`` entries).
            n_groups: Number of groups.

        Returns:
            Array (n_groups, 3) of [nref, nsys, ntp].
        """
        m = self.metric
        refs = self._ref_arrays(label)
        if groups is not self._one_group:
            groups = np.ascontiguousarray(groups, np.int64)
        if params.decoder == "frames":
            index = self._index_for(label, params)
            if index is not None:
                g_off = -1 if params.threshold_off is None else index.level(params.threshold_off)
                return level_counts(
                    index.blocks,
                    index.level(params.threshold),
                    g_off,
                    index.offsets,
                    self.data.frame_hop_s,
                    float(params.fill_gap_s),
                    float(params.min_duration_s),
                    self._durations,
                    refs,
                    (m.t_collar_s, m.percentage_of_length),
                    groups,
                    n_groups,
                )
            start, end, offsets = self._runs(label, params, None)
            hop, fill, min_dur = self.data.frame_hop_s, float(params.fill_gap_s), float(params.min_duration_s)
            ev = ClassEvents(*clean_decode(start, end, offsets, hop, fill, min_dur, self._durations))
        else:
            ev = self.events(label, params)
        return group_counts(
            ev.clip, ev.onset_s, ev.offset_s, *refs, m.t_collar_s, m.percentage_of_length, groups, n_groups
        )

    def _ref_arrays(self, label: str) -> tuple[I64, F64, F64]:
        """A class's references as the kernels take them (cached): per-clip starts, onsets, offsets."""
        hit = self._refs.get(label)
        if hit is None:
            r = self.data.refs[label]
            hit = (
                ref_first(r, len(self.data)),
                np.ascontiguousarray(r.onset_s, np.float64),
                np.ascontiguousarray(r.offset_s, np.float64),
            )
            self._refs[label] = hit
        return hit

    def evaluate(self, params: Mapping[str, ClassParams]) -> Evaluation:
        """Event-based figures for every class of the set.

        Raises:
            SedtuneInputError: If a class has no parameters.
        """
        out = {}
        for c in self.data.classes:
            if c not in params:
                raise SedtuneInputError(f"parameters: no entry for class {c!r}")
            out[c] = ClassResult.of(self.class_counts(c, params[c]))
        return Evaluation(out)

    def evaluate_segments(self, params: Mapping[str, ClassParams]) -> Evaluation:
        """Segment-based figures (segments of ``metric.segment_s``)."""
        out = {}
        for c in self.data.classes:
            ev = self.events(c, params[c])
            out[c] = ClassResult.of(segment_counts(self.data.refs[c], ev, self.metric.segment_s))
        return Evaluation(out)
