"""Plain-Python oracles of the documented decoder interfaces, for the boxes tests.

Nothing here imports envs.stack or envs.boxes internals: the rules are re-implemented from
their documentation (envs/stack.py, envs/boxes.py, DESIGN.md "The post-processing stack"),
one clip and one event at a time, so that a vectorization slip in sedtune cannot hide in the
oracle. The box *detection* rule is not re-implemented (it may still change); the oracles
start from the candidate boxes sedtune detected.

- threshold: a box is kept when its confidence > θ, a frame is active when p > θ (strict,
  float64);
- gap filling: a gap of g frames between consecutive events of a clip is filled when
  ``g * hop < fill_gap_s``; then events of d frames are dropped when ``d * hop < min_duration_s``;
- decoding: frames [s, e) become [s * hop, e * hop] seconds, the offset clipped to the clip's
  duration where known, the event dropped when it starts at or after that duration;
- median filter: ``scipy.ndimage.median_filter(size=k, mode="reflect")`` per clip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.ndimage import median_filter

from envs.boxes import Boxes
from envs.events import ClassEvents
from envs.params import ClassParams

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def scipy_filtered(values: npt.NDArray[np.floating], offsets: I64, k: int) -> npt.NDArray[np.floating]:
    """Per-clip ``scipy.ndimage.median_filter(size=k, mode="reflect")`` (same dtype)."""
    out = values.copy()
    if k == 1:
        return out
    for i in range(len(offsets) - 1):
        a, b = int(offsets[i]), int(offsets[i + 1])
        if b > a:
            out[a:b] = median_filter(values[a:b], size=k, mode="reflect")
    return out


def runs_to_events(
    per_clip: dict[int, list[tuple[int, int]]],
    frame_hop_s: float,
    durations_s: Sequence[float] | F64 | None,
    fill_gap_s: float,
    min_duration_s: float,
) -> ClassEvents:
    """Gap filling, minimum duration and decoding of per-clip frame runs [s, e)."""
    clips: list[int] = []
    onsets: list[float] = []
    offsets: list[float] = []
    for c in sorted(per_clip):
        merged: list[list[int]] = []
        for s, e in sorted(per_clip[c]):
            if merged and (s - merged[-1][1]) * frame_hop_s < fill_gap_s:
                merged[-1][1] = e
            else:
                merged.append([s, e])
        for s, e in merged:
            if (e - s) * frame_hop_s < min_duration_s:
                continue
            on, off = s * frame_hop_s, e * frame_hop_s
            if durations_s is not None and not math.isnan(durations_s[c]):
                dur = float(durations_s[c])
                if on >= dur:
                    continue
                off = min(off, dur)
            clips.append(c)
            onsets.append(on)
            offsets.append(off)
    return ClassEvents(np.array(clips, np.int64), np.array(onsets, np.float64), np.array(offsets, np.float64))


def box_events(
    boxes: Boxes,
    threshold: float,
    frame_hop_s: float,
    durations_s: Sequence[float] | F64 | None,
    fill_gap_s: float = 0.0,
    min_duration_s: float = 0.0,
) -> ClassEvents:
    """The boxes with confidence > θ, gap-filled, length-filtered and decoded."""
    per_clip: dict[int, list[tuple[int, int]]] = {}
    for c, s, e, conf in zip(
        boxes.clip.tolist(), boxes.start.tolist(), boxes.end.tolist(), boxes.confidence.tolist(), strict=True
    ):
        if conf > threshold:
            per_clip.setdefault(c, []).append((s, e))
    return runs_to_events(per_clip, frame_hop_s, durations_s, fill_gap_s, min_duration_s)


def frame_events(
    values: npt.NDArray[np.floating],
    offsets: I64,
    params: ClassParams,
    frame_hop_s: float,
    durations_s: Sequence[float] | F64 | None,
) -> ClassEvents:
    """The ``frames`` decoder: median filter, p > θ (hysteresis: start above θ, continue above
    θ_off), gap filling, minimum duration, decoding."""
    filtered = scipy_filtered(values, offsets, params.median_filter_frames).astype(np.float64)
    on_t = params.threshold
    off_t = params.threshold if params.threshold_off is None else params.threshold_off
    per_clip: dict[int, list[tuple[int, int]]] = {}
    for c in range(len(offsets) - 1):
        x = filtered[offsets[c] : offsets[c + 1]].tolist()
        i = 0
        while i < len(x):
            if x[i] > on_t:
                # an event starts at a frame above θ and continues while above θ_off
                j = i
                while j < len(x) and x[j] > off_t:
                    j += 1
                per_clip.setdefault(c, []).append((i, j))
                i = j
            else:
                i += 1
    return runs_to_events(per_clip, frame_hop_s, durations_s, params.fill_gap_s, params.min_duration_s)


def same_events(a: ClassEvents, b: ClassEvents) -> bool:
    """Identical clip indices, onsets and offsets (exact floats)."""
    return (
        np.array_equal(a.clip, b.clip)
        and np.array_equal(a.onset_s, b.onset_s)
        and np.array_equal(a.offset_s, b.offset_s)
    )
