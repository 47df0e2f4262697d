"""Event-based counts with sed_eval 0.2.1's optimal matching, clip by clip in compiled code.

sed_eval (``EventBasedMetrics(event_matching_type="optimal", evaluate_onset=True,
evaluate_offset=True)``) evaluates clip by clip. For one class, a reference event r and a
system event e of the same clip *hit* when

- ``fabs(r.onset - e.onset) <= t_collar`` and
- ``fabs(r.offset - e.offset) <= max(t_collar, percentage_of_length * (r.offset - r.onset))``,

and the true positives are a maximum-cardinality bipartite matching of the hits
(Hopcroft-Karp in sed_eval). The size of a maximum matching is unique, so any exact maximum
matching gives sed_eval's count: :func:`envs.matching.match_units` finds the hits of every
clip with the same float64 operations and matches them by augmenting paths.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from envs.events import ClassEvents
from envs.matching import match_units
from envs.metrics.counts import Counts

I64 = npt.NDArray[np.int64]


def ref_first(reference: ClassEvents, n_clips: int) -> I64:
    """Where each clip's reference events start: clip c holds ``[first[c], first[c + 1])``.

    Args:
        reference: Reference events, sorted by (clip, onset).
        n_clips: Clips (at least one more than the largest clip index).
    """
    return np.searchsorted(reference.clip, np.arange(n_clips + 1, dtype=np.int64), side="left").astype(
        np.int64
    )


def unit_true_positives(
    reference: ClassEvents,
    estimated: ClassEvents,
    unit_clip: I64,
    t_collar_s: float = 0.2,
    percentage_of_length: float = 0.2,
) -> I64:
    """True positives per unit: ``estimated.clip`` names a unit, matched against the
    reference events of clip ``unit_clip[unit]`` (a clip itself, or a sweep's pseudo-clip).

    Args:
        reference: Reference events, sorted by (clip, onset).
        estimated: System events; their ``clip`` is the unit (any order).
        unit_clip: The real clip of every unit.
        t_collar_s: Collar in seconds.
        percentage_of_length: Offset tolerance as a fraction of the reference length.
    """
    unit, on, off = estimated.clip, estimated.onset_s, estimated.offset_s
    if len(unit) > 1 and bool(np.any(unit[1:] < unit[:-1])):
        order = np.argsort(unit, kind="stable")
        unit, on, off = unit[order], on[order], off[order]
    n_clips = int(max(int(unit_clip.max(initial=-1)), int(reference.clip.max(initial=-1)))) + 1
    return match_units(
        np.ascontiguousarray(unit, np.int64),
        np.ascontiguousarray(on, np.float64),
        np.ascontiguousarray(off, np.float64),
        np.ascontiguousarray(unit_clip, np.int64),
        ref_first(reference, n_clips),
        np.ascontiguousarray(reference.onset_s, np.float64),
        np.ascontiguousarray(reference.offset_s, np.float64),
        float(t_collar_s),
        float(percentage_of_length),
    )


def event_counts(
    reference: ClassEvents,
    estimated: ClassEvents,
    t_collar_s: float = 0.2,
    percentage_of_length: float = 0.2,
) -> Counts:
    """sed_eval's class-wise Nref, Nsys and Ntp for one class over all clips.

    Args:
        reference: Reference events of one class, sorted by (clip, onset).
        estimated: System events of the class.
        t_collar_s: Collar in seconds.
        percentage_of_length: Offset tolerance as a fraction of the reference length.

    Returns:
        The class's totals.
    """
    n_clips = int(max(int(reference.clip.max(initial=-1)), int(estimated.clip.max(initial=-1)))) + 1
    ntp = unit_true_positives(
        reference, estimated, np.arange(n_clips, dtype=np.int64), t_collar_s, percentage_of_length
    )
    return Counts(len(reference), len(estimated), int(ntp.sum()))


def event_counts_by_group(
    reference: ClassEvents, estimated: ClassEvents, groups: I64, n_groups: int,
    t_collar_s: float = 0.2, percentage_of_length: float = 0.2,
) -> I64:
    """sed_eval's class-wise Nref, Nsys and Ntp for one class, split by clip groups.

    Matching never crosses clips, so the counts of a group are those of its clips alone and
    the group totals add up to :func:`event_counts`. One group per clip gives per-clip counts.

    Args:
        reference: Reference events of one class, sorted by (clip, onset).
        estimated: System events of the class.
        groups: Group id of every clip (indexed by the events' clip indices).
        n_groups: Number of groups.
        t_collar_s: Collar in seconds.
        percentage_of_length: Offset tolerance as a fraction of the reference length.

    Returns:
        Array (n_groups, 3) of [nref, nsys, ntp].
    """
    ntp = unit_true_positives(
        reference, estimated, np.arange(len(groups), dtype=np.int64), t_collar_s, percentage_of_length
    )
    out = np.zeros((n_groups, 3), np.int64)
    out[:, 0] = np.bincount(groups[reference.clip], minlength=n_groups)
    out[:, 1] = np.bincount(groups[estimated.clip], minlength=n_groups)
    out[:, 2] = np.bincount(groups, weights=ntp, minlength=n_groups).astype(np.int64)
    return out
