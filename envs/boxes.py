"""The ``boxes`` decoder: change-point event boxes with one confidence each.

Implemented from J. Ebbers, F. Germain, G. Wichern, J. Le Roux, "Sound Event Bounding Boxes",
Interspeech 2024 (arXiv 2406.04212) and the outline in DESIGN.md ("Decoders"); no code of
the authors' package is used. Frame-level thresholding couples an event's extent to its
confidence; this decoder first finds candidate boxes where the score curve changes, and only
then keeps or drops whole boxes by their confidence. Per class and clip, with frame hop h and
the clip's n frames (frame i covers ``[i*h, (i+1)*h]``; the curve is 0 outside the clip):

1. optional median filter (``median_filter_frames``, reflect boundary, as the frames decoder);
2. step filter of length L = ``step_filter_s`` seconds, evaluated at every frame boundary
   b = 0..n (time ``b*h``): Δ(b) = mean of s over ``[b*h, b*h + L/2]`` minus mean over
   ``[b*h - L/2, b*h]``, exact for any L (the curve is piecewise constant, so each mean is a
   difference of its piecewise-linear integral). Change points lie on frame boundaries, so
   boxes decode to frame-aligned events like the frames decoder's;
3. change points: every local extremum of Δ over the boundaries (changes of Δ within
   ``DELTA_TOL`` are flat); a maximum is an onset, at the last boundary of its plateau, a
   minimum an offset, at the first boundary of its floor (the tightest box). Extrema
   alternate; a clip's leading minimum and trailing maximum bound nothing. Box k spans
   ``[onset_k, offset_k)`` frames and the gaps between boxes are the other segments. A
   staircase (a plateau, a shoulder, the floor) so gets a change point at every step, and
   merging decides which steps belong to one event. DESIGN.md's outline keeps one extremum
   per sign run of Δ instead (the strongest between two zero crossings), which cannot cut a
   box at a shoulder. Measured with the search (tests/benchmarks/bench_strategies.py protocol:
   exact, robust, budget 200, default space; held-out macro F1 dcase2021-student / dcase2020 /
   dcase2021-teacher on seeds 0-4, in brackets seeds 5-14): one extremum per run 0.4810 /
   0.4403 / 0.4828 [0.4778 / 0.4313 / 0.4834], with step 5's span mean 0.4826 / 0.4430 / 0.4781
   [0.4768 / 0.4382 / 0.4788]; every extremum with a merged box's mean over its members only
   0.4767 / 0.4447 / 0.4805 [0.4661 / 0.4414 / 0.4791], with the span mean (as built) 0.4820 /
   0.4513 / 0.4834 [0.4667 / 0.4454 / 0.4785]. The authors' method, run as a black box on the
   same splits: 0.4720 / 0.4461 / 0.4766 [0.4663 / 0.4399 / 0.4746];
4. merging: box k and box k+1 of a clip merge across their gap when, with
   ``level = max(mean of box k, mean of box k+1)`` and ``dip = min of the gap``,
   ``level - dip < merge_abs`` or ``level / dip < merge_rel`` (each criterion optional, both
   together merge when either holds; a gap at 0 never merges by ratio). Each gap is judged on
   the boxes as detected, so the result does not depend on an order of merging; chains of
   merged boxes become one box spanning them all. DESIGN.md's outline measures the dip
   against the *smaller* of the two boxes' maxima; that merges every low bump (a shoulder of
   the curve, noise before a clear rise) into its neighbour and stretches the neighbour's
   extent over it. Measured (the authors' 18 settings, every threshold, naive, seeds 0-4,
   dcase2021-baseline-student held-out, with the change points of that time): smaller max
   0.448, larger max 0.459, larger mean 0.468; hence the larger mean;
5. confidence: the box's mean score over its whole span (``confidence="mean"``, the paper's;
   a merged box's mean covers its members and the gaps merged over, so a strong fragment
   chained to a long weak stretch is diluted) or its maximum over the span (``"max"``); the
   events are the boxes with confidence > θ (strict, float64), then gap filling and minimum
   duration as in the frames decoder, then decoding ``[start*h, end*h]`` clipped to the
   clip's duration where known.

For a fixed setting (everything but θ) the boxes are fixed; :func:`sweep_boxes` gives the
counts at every θ in one pass over the sorted box confidences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from envs.events import ClassEvents
from envs.params import CONFIDENCES, BoxSetting
from envs.stack import clean, decode, equal_length_blocks, median_filter_values

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

# Changes of the step response this small are flat: float64 rounding on flat stretches of a curve.
DELTA_TOL = 1e-9


@dataclass(frozen=True)
class Boxes:
    """One class's candidate boxes over many clips, sorted by (clip, start).

    Attributes:
        clip: Clip index of every box.
        start: First frame of the box (clip-local).
        end: One past the box's last frame (clip-local).
        confidence: The box's confidence (float64).
        n_clips: Number of clips the boxes were detected on.
    """

    clip: I64
    start: I64
    end: I64
    confidence: F64
    n_clips: int

    def __len__(self) -> int:
        return int(self.clip.shape[0])


@dataclass(frozen=True)
class ChangeBoxes:
    """One class's boxes before merging (steps 1-3), with what merging needs.

    Everything here depends on the median filter and the step filter only, so the merge
    criteria and confidence kinds of a grid share one detection. Arrays are per box, sorted by
    (clip, start); ``gap_*`` describe the gap after a box up to the next box of its clip (NaN
    after a clip's last box).

    Attributes:
        clip: Clip index of every box.
        start: First frame (clip-local).
        end: One past the last frame (clip-local).
        mean: Mean score of the box.
        peak: Maximum score of the box.
        gap_min: Minimum score of the following gap.
        gap_max: Maximum score of the following gap.
        gap_sum: Sum of the scores over the following gap (score x frames).
        n_clips: Number of clips.
    """

    clip: I64
    start: I64
    end: I64
    mean: F64
    peak: F64
    gap_min: F64
    gap_max: F64
    gap_sum: F64
    n_clips: int


def detect_boxes(
    values: npt.NDArray[np.floating], offsets: I64, frame_hop_s: float, setting: BoxSetting
) -> Boxes:
    """Candidate boxes of every clip (steps 1-5 of the module docstring, without θ).

    Args:
        values: One class's frame scores of all clips, concatenated.
        offsets: Clip boundaries in frames (n_clips + 1).
        frame_hop_s: Seconds per frame.
        setting: The box setting.

    Returns:
        The boxes, sorted by (clip, start).
    """
    found = change_boxes(values, offsets, frame_hop_s, setting.median_filter_frames, setting.step_filter_s)
    return merge_boxes(found, setting)


def change_boxes(
    values: npt.NDArray[np.floating],
    offsets: I64,
    frame_hop_s: float,
    median_filter_frames: int,
    step_filter_s: float,
) -> ChangeBoxes:
    """Steps 1-3: filter, step filter, change points, per-box and per-gap statistics.

    Args:
        values: One class's frame scores of all clips, concatenated.
        offsets: Clip boundaries in frames (n_clips + 1).
        frame_hop_s: Seconds per frame.
        median_filter_frames: Median filter before detection (odd; 1 = off).
        step_filter_s: Step-filter length L in seconds (> 0).
    """
    filtered = median_filter_values(values, offsets, median_filter_frames)
    half = step_filter_s / (2.0 * frame_hop_s)  # half window in frames (real)
    parts = []
    for idx in equal_length_blocks(offsets):
        clips = np.searchsorted(offsets, idx[:, 0], side="right").astype(np.int64) - 1
        parts.append(_block_boxes(filtered[idx].astype(np.float64), clips, half))
    n_clips = len(offsets) - 1
    if not parts:
        z, e = np.zeros(0, np.int64), np.zeros(0)
        return ChangeBoxes(z, z, z, e, e, e, e, e, n_clips)
    cols = [np.concatenate([p[i] for p in parts]) for i in range(8)]
    order = np.lexsort((cols[1], cols[0]))
    clip, start, end = (cols[i][order].astype(np.int64) for i in range(3))
    mean, peak, gap_min, gap_max, gap_sum = (cols[i][order].astype(np.float64) for i in range(3, 8))
    return ChangeBoxes(clip, start, end, mean, peak, gap_min, gap_max, gap_sum, n_clips)


def merge_boxes(found: ChangeBoxes, setting: BoxSetting) -> Boxes:
    """Steps 4-5: merge across shallow gaps, then one confidence per box.

    Args:
        found: The boxes before merging (:func:`change_boxes`).
        setting: Supplies the merge criteria and the confidence kind.
    """
    if setting.confidence not in CONFIDENCES:
        raise ValueError(f"confidence must be one of {CONFIDENCES}, but got {setting.confidence!r}")
    clip, start, end, mean, peak = found.clip, found.start, found.end, found.mean, found.peak
    if len(clip) > 1 and (setting.merge_abs is not None or setting.merge_rel is not None):
        # Gap i lies between box i and box i + 1 of the same clip.
        same = ~np.isnan(found.gap_min[:-1])
        dip = np.where(same, found.gap_min[:-1], 0.0)
        # The level a gap is measured against: the higher of its two boxes' mean scores.
        level = np.maximum(mean[1:], mean[:-1])
        merge = np.zeros(len(level), dtype=bool)
        if setting.merge_abs is not None:
            merge |= level - dip < setting.merge_abs
        if setting.merge_rel is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(dip > 0, level / np.where(dip > 0, dip, 1.0), np.inf)
            merge |= ratio < setting.merge_rel
        merge &= same
        if merge.any():
            first = np.r_[True, ~merge]
            last = np.r_[~merge, True]
            group = np.cumsum(first) - 1
            # A merged box's mean and maximum are over its whole span: members and the gaps
            # merged over (gap i follows box i).
            total = mean * (end - start)
            total[:-1][merge] += found.gap_sum[:-1][merge]
            mean = np.bincount(group, total) / (end[last] - start[first])
            top = np.full(int(group[-1]) + 1, -np.inf)
            np.maximum.at(top, group, peak)
            np.maximum.at(top, group[:-1][merge], found.gap_max[:-1][merge])
            clip, start, end, peak = clip[first], start[first], end[last], top
    conf = peak if setting.confidence == "max" else mean
    return Boxes(clip, start, end, np.asarray(conf, np.float64), found.n_clips)


def _block_boxes(s: F64, clips: I64, half: float) -> tuple[npt.NDArray[np.generic], ...]:
    """Unmerged boxes of equal-length clips held as rows of ``s`` (m clips x n frames).

    Returns:
        clip, start, end, mean, peak, gap_min, gap_max, gap_sum per box (see :class:`ChangeBoxes`).
    """
    m, n = s.shape
    csum = np.zeros((m, n + 1))
    np.cumsum(s, axis=1, out=csum[:, 1:])
    b = np.arange(n + 1, dtype=np.float64)

    def integral(x: F64) -> F64:
        # Integral of the piecewise-constant curve over [0, x] (frames), x clamped to [0, n].
        x = np.clip(x, 0.0, float(n))
        i = np.minimum(np.floor(x).astype(np.int64), n - 1)
        return np.asarray(csum[:, i] + (x - i)[None, :] * s[:, i], np.float64)

    delta = (integral(b + half) - 2.0 * csum + integral(b - half)) / half
    empty = (np.zeros(0, np.int64),) * 3 + (np.zeros(0),) * 5
    # Change points: every local extremum of Δ over the boundaries (module docstring, step 3).
    # step[:, j] = Δ(j + 1) - Δ(j); steps within DELTA_TOL are flat.
    step = delta[:, 1:] - delta[:, :-1]
    rows, js = np.nonzero(np.abs(step) > DELTA_TOL)
    if len(rows) == 0:
        return empty
    rising = step[rows, js] > 0
    same_row = rows[1:] == rows[:-1]
    turn = np.flatnonzero(same_row & (rising[1:] != rising[:-1]))
    # A maximum sits at the last boundary of its plateau (where the fall begins), a minimum at
    # the first boundary of its floor (where the fall ended): the tightest box.
    turn_max = rising[turn]
    turn_pos = np.where(turn_max, js[turn + 1], js[turn] + 1)
    # A row whose first change falls starts at a maximum; one whose last change falls ends at a
    # minimum (a row starting with a rise or ending with a rise has no change point there).
    first = np.flatnonzero(np.r_[True, ~same_row] & ~rising)
    last = np.flatnonzero(np.r_[~same_row, True] & ~rising)
    e_row = np.concatenate((rows[turn], rows[first], rows[last]))
    e_pos = np.concatenate((turn_pos, js[first], js[last] + 1))
    e_max = np.concatenate((turn_max, np.ones(len(first), bool), np.zeros(len(last), bool)))
    order = np.lexsort((e_pos, e_row))
    e_row, e_pos, e_max = e_row[order], e_pos[order], e_max[order]
    # Extrema alternate within a row; a box needs a maximum first and a minimum last.
    row_first = np.r_[True, e_row[1:] != e_row[:-1]]
    row_last = np.r_[e_row[1:] != e_row[:-1], True]
    keep = ~((row_first & ~e_max) | (row_last & e_max))
    e_row, e_pos, e_max = e_row[keep], e_pos[keep], e_max[keep]
    row = e_row[e_max].astype(np.int64)
    start, end = e_pos[e_max].astype(np.int64), e_pos[~e_max].astype(np.int64)
    if len(start) == 0:
        return empty
    flat = s.ravel()
    base = row * n
    mean = (csum[row, end] - csum[row, start]) / (end - start)
    peak = _segment_reduce(np.maximum, flat, base + start, base + end)
    gap_min = np.full(len(start), np.nan)
    gap_max = np.full(len(start), np.nan)
    gap_sum = np.full(len(start), np.nan)
    same = np.flatnonzero(row[1:] == row[:-1])
    if len(same):
        lo, hi = base[same] + end[same], base[same] + start[same + 1]
        gap_min[same] = _segment_reduce(np.minimum, flat, lo, hi)
        gap_max[same] = _segment_reduce(np.maximum, flat, lo, hi)
        gap_sum[same] = csum[row[same], start[same + 1]] - csum[row[same], end[same]]
    return clips[row], start, end, mean, peak, gap_min, gap_max, gap_sum


def _segment_reduce(op: np.ufunc, flat: F64, lo: I64, hi: I64) -> F64:
    """``op`` over ``flat[lo[i]:hi[i]]`` for non-empty segments (vectorized reduceat)."""
    padded = np.concatenate((flat, [0.0]))
    idx = np.empty(2 * len(lo), np.int64)
    idx[0::2], idx[1::2] = lo, hi
    return np.asarray(op.reduceat(padded, idx)[0::2], np.float64)


def box_events(
    boxes: Boxes,
    threshold: float,
    frame_hop_s: float,
    durations_s: F64 | None,
    fill_gap_s: float = 0.0,
    min_duration_s: float = 0.0,
) -> ClassEvents:
    """The events at one threshold: boxes with confidence > θ, cleaned and decoded.

    Args:
        boxes: Candidate boxes (:func:`detect_boxes`).
        threshold: Box-confidence threshold θ.
        frame_hop_s: Seconds per frame.
        durations_s: Per clip duration (NaN where unknown), or None.
        fill_gap_s: Gaps between kept boxes shorter than this (seconds) are filled.
        min_duration_s: Events shorter than this (seconds) are dropped, after gap filling.
    """
    keep = boxes.confidence > np.float64(threshold)
    clip, start, end = clean(
        boxes.clip[keep], boxes.start[keep], boxes.end[keep], frame_hop_s, fill_gap_s, min_duration_s
    )
    return decode(clip, start, end, frame_hop_s, durations_s)
