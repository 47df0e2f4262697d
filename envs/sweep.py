"""The exact threshold sweep: one class, one fixed setting, F at every threshold.

For a fixed median-filter kernel, gap filling and minimum duration, the events of a clip
depend on the threshold only through which of the clip's distinct (filtered) values lie
above it, so a clip with m distinct values has m + 1 possible outputs. The sweep computes the
runs of every clip at every one of its levels at once from the ranks of
:class:`envs.levels.LevelIndex` in one compiled pass (:func:`envs.kernels.level_runs`; a
median filter commutes with a threshold, so filtering once per kernel suffices), cleans and
decodes them, matches them against the clip's reference events (each (clip, level) is a
pseudo-clip with its own copy of the references), and accumulates the per-clip count changes
over the global sorted values. The result is exact: the counts at every threshold equal a
direct evaluation at that threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from envs.boxes import Boxes
from envs.events import ClassEvents
from envs.kernels import level_runs
from envs.levels import LevelIndex
from envs.metrics.counts import Counts
from envs.metrics.event_based import unit_true_positives
from envs.metrics.fscore import f_measure
from envs.stack import clean, decode

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

# Frames handled per chunk of clips: bounds the sweep's memory on large sets.
CHUNK_FRAMES = 1_000_000


@dataclass(frozen=True)
class SweepResult:
    """F against threshold for one class and setting, over the thresholds in (0, 1).

    Attributes:
        thresholds: One representative threshold per distinct decision (ascending): the
            middle of the interval of thresholds that give that decision.
        lower: Lower end of each interval (inclusive).
        upper: Upper end of each interval (exclusive).
        ntp: True positives at each threshold.
        nsys: System events at each threshold.
        nref: Reference events.
        f_measure: Class F at each threshold (sed_eval, zero_score).
        group_ntp: True positives per clip group (n_groups, thresholds).
        group_nsys: System events per clip group (n_groups, thresholds).
        group_nref: Reference events per clip group (n_groups,).
    """

    thresholds: F64
    lower: F64
    upper: F64
    ntp: I64
    nsys: I64
    nref: int
    f_measure: F64
    group_ntp: npt.NDArray[np.int64]
    group_nsys: npt.NDArray[np.int64]
    group_nref: I64

    def counts(self, i: int) -> Counts:
        """Counts at threshold index i."""
        return Counts(self.nref, int(self.nsys[i]), int(self.ntp[i]))

    def best(self) -> tuple[float, float]:
        """(threshold, F) with the highest F (the lowest such threshold on ties)."""
        if len(self.f_measure) == 0 or bool(np.isnan(self.f_measure).all()):
            return 0.5, float("nan")
        i = int(np.nanargmax(self.f_measure))
        return float(self.thresholds[i]), float(self.f_measure[i])


def sweep_class(
    index: LevelIndex,
    refs: ClassEvents,
    frame_hop_s: float,
    durations_s: F64,
    t_collar_s: float = 0.2,
    percentage_of_length: float = 0.2,
    fill_gap_s: float = 0.0,
    min_duration_s: float = 0.0,
    groups: I64 | None = None,
    n_groups: int = 1,
) -> SweepResult:
    """Sweep every threshold of one class for one setting of the other stages.

    Args:
        index: Level index of the class's (filtered) scores.
        refs: The class's reference events (clip indices into the same clips).
        frame_hop_s: Seconds per frame.
        durations_s: Per clip duration (NaN where unknown).
        t_collar_s: Collar (seconds).
        percentage_of_length: Offset tolerance fraction.
        fill_gap_s: Gap-filling setting (seconds).
        min_duration_s: Minimum-duration setting (seconds).
        groups: Group id (e.g. cross-validation fold) of every clip; None = one group.
        n_groups: Number of groups.

    Returns:
        The F curve over all thresholds in (0, 1).
    """
    n_values = len(index.values)
    n_clips = len(index.offsets) - 1
    if groups is None:
        groups = np.zeros(n_clips, np.int64)
        n_groups = 1
    delta_tp = np.zeros((n_groups, n_values + 2), np.int64)
    delta_sys = np.zeros((n_groups, n_values + 2), np.int64)
    lo = 0
    while lo < n_clips:
        # Clips [lo, hi) with at most CHUNK_FRAMES frames (at least one clip).
        limit = index.offsets[lo] + CHUNK_FRAMES
        hi = max(lo + 1, int(np.searchsorted(index.offsets, limit, side="right")) - 1)
        hi = min(hi, n_clips)
        _sweep_chunk(
            index,
            lo,
            hi,
            refs,
            frame_hop_s,
            durations_s,
            t_collar_s,
            percentage_of_length,
            fill_gap_s,
            min_duration_s,
            groups,
            delta_tp,
            delta_sys,
        )
        lo = hi
    return _result(delta_tp, delta_sys, index.values, refs, groups, n_groups)


def _result(
    delta_tp: npt.NDArray[np.int64],
    delta_sys: npt.NDArray[np.int64],
    values: F64,
    refs: ClassEvents,
    groups: I64,
    n_groups: int,
) -> SweepResult:
    """The F curve from per-group count changes over the sorted distinct ``values``."""
    n_values = len(values)
    g_tp = np.cumsum(delta_tp, axis=1)[:, : n_values + 1]
    g_sys = np.cumsum(delta_sys, axis=1)[:, : n_values + 1]
    ntp, nsys = g_tp.sum(axis=0), g_sys.sum(axis=0)
    # Interval g holds thresholds in [V[g-1], V[g]); keep those meeting (0, 1).
    lower = np.concatenate(([-np.inf], values))
    upper = np.concatenate((values, [np.inf]))
    valid = (upper > 0.0) & (lower < 1.0)
    lo_c = np.maximum(lower[valid], 0.0)
    up_c = np.minimum(upper[valid], 1.0)
    thresholds = (lo_c + up_c) / 2
    nref = len(refs)
    f = f_measure(nref, nsys[valid], ntp[valid])
    g_ref = np.bincount(groups[refs.clip], minlength=n_groups).astype(np.int64)
    return SweepResult(
        thresholds,
        lower[valid],
        upper[valid],
        ntp[valid],
        nsys[valid],
        nref,
        f,
        g_tp[:, valid],
        g_sys[:, valid],
        g_ref,
    )


def sweep_boxes(
    boxes: Boxes,
    refs: ClassEvents,
    frame_hop_s: float,
    durations_s: F64,
    t_collar_s: float = 0.2,
    percentage_of_length: float = 0.2,
    fill_gap_s: float = 0.0,
    min_duration_s: float = 0.0,
    groups: I64 | None = None,
    n_groups: int = 1,
) -> SweepResult:
    """Every box-confidence threshold of one class for one box setting, in one pass.

    A clip whose boxes have m distinct confidences ``v_1 < ... < v_m`` has m + 1 outputs: at
    θ in ``[v_j, v_(j+1))`` its boxes with confidence > v_j (all of them below v_1). Each
    (clip, j) is a pseudo-clip holding those boxes, cleaned, decoded and matched against its
    own copy of the clip's references; the count changes are accumulated over the sorted
    distinct confidences of all clips, as in :func:`sweep_class`. Exact: the counts at every
    threshold equal :func:`envs.boxes.box_events` evaluated there (tested).

    Args:
        boxes: The class's candidate boxes (:func:`envs.boxes.detect_boxes`).
        refs: The class's reference events (same clip indices).
        frame_hop_s: Seconds per frame.
        durations_s: Per clip duration (NaN where unknown).
        t_collar_s: Collar (seconds).
        percentage_of_length: Offset tolerance fraction.
        fill_gap_s: Gap filling after thresholding (seconds).
        min_duration_s: Minimum duration after gap filling (seconds).
        groups: Group id (e.g. cross-validation fold) of every clip; None = one group.
        n_groups: Number of groups.
    """
    n_clips = boxes.n_clips
    if groups is None:
        groups = np.zeros(n_clips, np.int64)
        n_groups = 1
    values, box_rank = np.unique(boxes.confidence, return_inverse=True)
    box_rank = box_rank.astype(np.int64)
    n_values = len(values)
    delta_tp = np.zeros((n_groups, n_values + 2), np.int64)
    delta_sys = np.zeros((n_groups, n_values + 2), np.int64)
    if len(boxes):
        n_v = np.int64(n_values + 1)
        # Levels of a clip: one per distinct confidence rank r of its boxes, holding the boxes
        # of rank >= r; it applies at thresholds just below V[r] (down to the previous level).
        levels = np.unique(boxes.clip * n_v + box_rank)
        level_clip, level_rank = levels // n_v, levels % n_v
        n_levels = len(levels)
        # Box i belongs to the levels of its clip with rank <= its own.
        lo = np.searchsorted(levels, boxes.clip * n_v, side="left")
        hi = np.searchsorted(levels, boxes.clip * n_v + box_rank, side="right")
        n = hi - lo
        first = np.cumsum(n) - n
        lvl = np.repeat(lo - first, n) + np.arange(int(n.sum()), dtype=np.int64)
        box = np.repeat(np.arange(len(boxes), dtype=np.int64), n)
        order = np.lexsort((boxes.start[box], lvl))
        lvl, box = lvl[order], box[order]
        g, s, e = clean(lvl, boxes.start[box], boxes.end[box], frame_hop_s, fill_gap_s, min_duration_s)
        est = decode(g, s, e, frame_hop_s, durations_s[level_clip])
        nsys, ntp = pseudo_clip_counts(est, level_clip, n_levels, refs, t_collar_s, percentage_of_length)
        _accumulate(level_clip, level_rank, nsys, ntp, groups, delta_tp, delta_sys)
    return _result(delta_tp, delta_sys, values, refs, groups, n_groups)


def _sweep_chunk(
    index: LevelIndex,
    clip_lo: int,
    clip_hi: int,
    refs: ClassEvents,
    hop: float,
    durations_s: F64,
    t_collar_s: float,
    pct: float,
    fill_gap_s: float,
    min_duration_s: float,
    groups: I64,
    delta_tp: npt.NDArray[np.int64],
    delta_sys: npt.NDArray[np.int64],
) -> None:
    if index.offsets[clip_hi] == index.offsets[clip_lo]:
        return
    # Every (clip, distinct rank) is a pseudo-clip: that clip's output at one level.
    level_clip, level_rank, group, start, end = level_runs(index.rank, index.offsets, clip_lo, clip_hi)
    group, start, end = clean(group, start, end, hop, fill_gap_s, min_duration_s)
    # Decode with each level as a pseudo-clip carrying its clip's duration.
    est = decode(group, start, end, hop, durations_s[level_clip])
    nsys, ntp = pseudo_clip_counts(est, level_clip, len(level_clip), refs, t_collar_s, pct)
    _accumulate(level_clip, level_rank, nsys, ntp, groups, delta_tp, delta_sys)


def pseudo_clip_counts(
    est: ClassEvents, level_clip: I64, n_levels: int, refs: ClassEvents, t_collar_s: float, pct: float
) -> tuple[I64, I64]:
    """System events and true positives of every pseudo-clip (one clip's output at one level).

    Args:
        est: Events of all pseudo-clips (``est.clip`` is the pseudo-clip index).
        level_clip: Real clip of every pseudo-clip.
        n_levels: Number of pseudo-clips.
        refs: The class's reference events (real clip indices).
        t_collar_s: Collar (seconds).
        pct: Offset tolerance fraction.
    """
    nsys = np.bincount(est.clip, minlength=n_levels)
    # Each level is matched against its clip's references (no copies needed).
    ntp = unit_true_positives(refs, est, level_clip, t_collar_s, pct)
    return nsys.astype(np.int64), ntp.astype(np.int64)


def _accumulate(
    level_clip: I64,
    level_rank: I64,
    nsys: I64,
    ntp: I64,
    groups: I64,
    delta_tp: npt.NDArray[np.int64],
    delta_sys: npt.NDArray[np.int64],
) -> None:
    """Record each clip's counts as changes over the global ranks.

    Pseudo-clips are sorted by (clip, rank); a clip's first level holds from rank 0, and at
    ``rank_k + 1`` the clip's counts change to its next level's (or to nothing after its last).
    """
    n_levels = len(level_clip)
    last = np.ones(n_levels, dtype=bool)
    last[:-1] = level_clip[1:] != level_clip[:-1]
    first_lvl = np.ones(n_levels, dtype=bool)
    first_lvl[1:] = level_clip[1:] != level_clip[:-1]
    next_tp = np.where(last, 0, np.roll(ntp, -1))
    next_sys = np.where(last, 0, np.roll(nsys, -1))
    g = groups[level_clip]
    n_groups = delta_tp.shape[0]
    delta_tp[:, 0] += np.bincount(g[first_lvl], weights=ntp[first_lvl], minlength=n_groups).astype(np.int64)
    delta_sys[:, 0] += np.bincount(g[first_lvl], weights=nsys[first_lvl], minlength=n_groups).astype(np.int64)
    np.add.at(delta_tp, (g, level_rank + 1), next_tp - ntp)
    np.add.at(delta_sys, (g, level_rank + 1), next_sys - nsys)
