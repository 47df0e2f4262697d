"""Segment-based counts with sed_eval 0.2.1 semantics, vectorized over clips.

sed_eval (``SegmentBasedMetrics``) turns each clip's event list into a binary roll of
``time_resolution`` segments: an event marks segments ``floor(onset / res)`` up to (not
including) ``ceil(offset / res)``. Per class, Nref and Nsys count active segments and Ntp
the segments active in both. The evaluated length only pads both rolls with inactive
segments, which changes none of these counts, so it is not needed here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from envs.events import ClassEvents
from envs.metrics.counts import Counts


def active_segments(events: ClassEvents, time_resolution_s: float = 1.0) -> npt.NDArray[np.int64]:
    """Unique codes ``clip * M + segment`` of the segments any event covers.

    Args:
        events: One class's events.
        time_resolution_s: Segment length in seconds.

    Returns:
        Sorted unique codes; M is fixed by :func:`_stride` so codes of two lists compare.
    """
    if len(events) == 0:
        return np.zeros(0, np.int64)
    res = float(time_resolution_s)
    # Same float operations as sed_eval: onset * 1 / float(res).
    start = np.floor(events.onset_s * 1 / res).astype(np.int64)
    end = np.ceil(events.offset_s * 1 / res).astype(np.int64)
    n = np.maximum(end - start, 0)
    total = int(n.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = np.cumsum(n) - n
    seg = np.repeat(start - first, n) + np.arange(total, dtype=np.int64)
    clip = np.repeat(events.clip, n)
    return np.unique(clip * _STRIDE + seg)


# Segments per clip the codes can hold (clips up to ~2^31 segments long).
_STRIDE = np.int64(1) << 31


def segment_counts(
    reference: ClassEvents,
    estimated: ClassEvents,
    time_resolution_s: float = 1.0,
) -> Counts:
    """sed_eval's class-wise segment-based Nref, Nsys and Ntp over all clips.

    Args:
        reference: Reference events of one class.
        estimated: System events of the class.
        time_resolution_s: Segment length in seconds (DCASE: 1.0).

    Returns:
        The class's totals, in segments.
    """
    ref = active_segments(reference, time_resolution_s)
    est = active_segments(estimated, time_resolution_s)
    ntp = len(np.intersect1d(ref, est, assume_unique=True))
    return Counts(len(ref), len(est), ntp)
