"""The post-processing stack, stage by stage, for one class over many clips.

Stages run in this fixed order (per class c, parameters :class:`envs.params.ClassParams`):

1. median filter over the frame probabilities, kernel ``median_filter_frames`` (odd, 1 = off),
   boundary mode ``reflect`` (``d c b a | a b c d | d c b a``), i.e.
   ``scipy.ndimage.median_filter(p, size=k, mode="reflect")`` per clip, as the DCASE baselines;
2. decision: frame active where ``p > threshold`` (strict, as sed_scores_eval), or with
   hysteresis an event starts at a frame with ``p > threshold`` and continues while
   ``p > threshold_off``;
3. clean-up: gaps between consecutive events of a clip shorter than ``fill_gap_s`` are filled
   (gap length = frames between them x hop), then events shorter than ``min_duration_s``
   (frames x hop) are dropped;
4. decoding: a run of active frames i..j (0-based) becomes the event
   ``[i * hop, (j + 1) * hop]`` in seconds, its offset clipped to the clip's duration where
   known (an event that would start at or after the end is dropped).

Comparisons against thresholds are made in float64 (the float32 probability widened).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.ndimage import median_filter as _scipy_median

from envs.events import ClassEvents
from envs.kernels import small_alphabet_median
from envs.params import ClassParams
from envs.scoreset import ClassScores

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def median_filter(scores: ClassScores, kernel_frames: int) -> ClassScores:
    """Median-filter every clip (reflect boundary), clips of equal length in one call.

    Args:
        scores: One class's scores.
        kernel_frames: Odd kernel size in frames; 1 returns the input.

    Returns:
        Filtered scores with the same offsets.
    """
    values = median_filter_values(scores.values, scores.offsets, kernel_frames)
    return ClassScores(scores.label, values, scores.offsets)


def median_filter_values(values: npt.NDArray[Any], offsets: I64, kernel_frames: int) -> npt.NDArray[Any]:
    """Median-filter ragged per-clip values of any dtype (see :func:`median_filter`)."""
    if kernel_frames == 1:
        return values
    out = np.empty_like(values)
    for idx in equal_length_blocks(offsets):
        out[idx] = _scipy_median(values[idx], size=(1, int(kernel_frames)), mode="reflect")
    return out


def equal_length_blocks(offsets: I64) -> Iterator[I64]:
    """Frame indices of the clips, grouped by length (empty clips skipped).

    Args:
        offsets: Clip boundaries in frames (``n_clips + 1`` values).

    Yields:
        Per distinct length, an index array of shape (clips of that length, length); each
        row holds one clip's frame indices, in order.
    """
    lengths = np.diff(offsets)
    for length in np.unique(lengths):
        if length == 0:
            continue
        clips = np.flatnonzero(lengths == length)
        yield offsets[clips][:, None] + np.arange(length)[None, :]


def median_filter_levels(q: I64, offsets: I64, kernel_frames: int, n_levels: int) -> I64:
    """Median filter for small integer alphabets (values 0..n_levels-1), reflect boundary.

    A running histogram of the window gives its median in O(1) per frame
    (:func:`envs.kernels.small_alphabet_median`), much faster than a rank filter when the
    alphabet is small (a quantized threshold grid). Clips no longer than the half window
    reflect more than once, as scipy does its own way: scipy filters those (they are rare).
    Equal to :func:`median_filter_values` (tested).
    """
    if kernel_frames == 1:
        return q
    half = kernel_frames // 2
    out = small_alphabet_median(np.ascontiguousarray(q, np.int64), offsets, int(kernel_frames), int(n_levels))
    lengths = np.diff(offsets)
    short = np.flatnonzero((lengths > 0) & (lengths <= half))
    if len(short):
        frames = np.concatenate([np.arange(offsets[c], offsets[c + 1]) for c in short])
        short_offsets = np.concatenate(([0], np.cumsum(lengths[short]))).astype(np.int64)
        out[frames] = median_filter_values(q[frames], short_offsets, kernel_frames)
    return out.astype(q.dtype, copy=False)


def runs(active: BoolArray, offsets: I64) -> tuple[I64, I64]:
    """Maximal runs of active frames that do not cross clip boundaries.

    Args:
        active: Frame decisions, concatenated over clips.
        offsets: Clip boundaries (n_clips + 1).

    Returns:
        Global start positions and end positions (exclusive), in order.
    """
    if active.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    prev = np.empty_like(active)
    prev[0] = False
    prev[1:] = active[:-1]
    nxt = np.empty_like(active)
    nxt[-1] = False
    nxt[:-1] = active[1:]
    starts_at = offsets[:-1][offsets[:-1] < active.size]
    prev[starts_at] = False
    ends_at = offsets[1:][offsets[1:] > 0] - 1
    nxt[ends_at] = False
    start = np.flatnonzero(active & ~prev).astype(np.int64)
    end = np.flatnonzero(active & ~nxt).astype(np.int64) + 1
    return start, end


def hysteresis_runs(values: npt.NDArray[np.floating], offsets: I64, on: float, off: float) -> tuple[I64, I64]:
    """Runs that start above ``on`` and continue while above ``off``."""
    v = values.astype(np.float64, copy=False)
    start, end = runs(v > np.float64(off), offsets)
    hot = np.flatnonzero(v > np.float64(on)).astype(np.int64)
    if len(hot) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    j = np.searchsorted(hot, start, side="left")
    first = hot[np.minimum(j, len(hot) - 1)]
    valid = (j < len(hot)) & (first < end)
    return first[valid].astype(np.int64), end[valid]


def clean(
    group: I64, start: I64, end: I64, frame_hop_s: float, fill_gap_s: float, min_duration_s: float
) -> tuple[I64, I64, I64]:
    """Fill short gaps between consecutive runs of a group, then drop short runs.

    Args:
        group: Clip (or pseudo-clip) of every run; runs sorted by (group, start).
        start: Run starts (frames).
        end: Run ends, exclusive (frames).
        frame_hop_s: Seconds per frame.
        fill_gap_s: Gaps shorter than this (seconds) are filled.
        min_duration_s: Runs shorter than this (seconds) are dropped.

    Returns:
        The cleaned (group, start, end).
    """
    if fill_gap_s > 0 and len(start) > 1:
        gap_s = (start[1:] - end[:-1]) * frame_hop_s
        merge = (group[1:] == group[:-1]) & (gap_s < fill_gap_s)
        if merge.any():
            first = np.concatenate(([True], ~merge))
            last = np.concatenate((~merge, [True]))
            group, start, end = group[first], start[first], end[last]
    if min_duration_s > 0 and len(start):
        keep = (end - start) * frame_hop_s >= min_duration_s
        group, start, end = group[keep], start[keep], end[keep]
    return group, start, end


def decode(
    clip: I64, start_frame: I64, end_frame: I64, frame_hop_s: float, durations_s: F64 | None
) -> ClassEvents:
    """Runs (clip-local frames) to events in seconds, clipped to known durations.

    Args:
        clip: Clip index of every run.
        start_frame: First active frame within the clip.
        end_frame: One past the last active frame.
        frame_hop_s: Seconds per frame.
        durations_s: Per clip duration (NaN where unknown), or None.

    Returns:
        The events, sorted by (clip, onset).
    """
    onset = start_frame.astype(np.float64) * frame_hop_s
    offset = end_frame.astype(np.float64) * frame_hop_s
    if durations_s is not None and len(clip):
        dur = durations_s[clip]
        known = ~np.isnan(dur)
        offset = np.where(known, np.minimum(offset, dur), offset)
        keep = ~known | (onset < dur)
        clip, onset, offset = clip[keep], onset[keep], offset[keep]
    return ClassEvents(clip.astype(np.int64), onset, offset)


def apply_stack(
    scores: ClassScores,
    params: ClassParams,
    frame_hop_s: float,
    durations_s: F64 | None = None,
    filtered: ClassScores | None = None,
) -> ClassEvents:
    """Run the whole ``frames`` stack for one class (the frame-level reference path).

    Args:
        scores: One class's scores for all clips.
        params: That class's parameters.
        frame_hop_s: Seconds per frame.
        durations_s: Per clip duration (NaN where unknown), or None.
        filtered: Scores already median-filtered with ``params.median_filter_frames``.

    Returns:
        The class's events.
    """
    f = filtered if filtered is not None else median_filter(scores, params.median_filter_frames)
    if params.threshold_off is None:
        start, end = runs(f.values.astype(np.float64) > np.float64(params.threshold), f.offsets)
    else:
        start, end = hysteresis_runs(f.values, f.offsets, params.threshold, params.threshold_off)
    clip = np.searchsorted(f.offsets, start, side="right").astype(np.int64) - 1
    local_start = start - f.offsets[clip]
    local_end = end - f.offsets[clip]
    clip, local_start, local_end = clean(
        clip, local_start, local_end, frame_hop_s, params.fill_gap_s, params.min_duration_s
    )
    return decode(clip, local_start, local_end, frame_hop_s, durations_s)
