"""Event-based counts with sed_eval 0.2.1's optimal matching, vectorized over clips.

sed_eval (``EventBasedMetrics(event_matching_type="optimal", evaluate_onset=True,
evaluate_offset=True)``) evaluates clip by clip. For one class, a reference event r and a
system event e of the same clip *hit* when

- ``fabs(r.onset - e.onset) <= t_collar`` and
- ``fabs(r.offset - e.offset) <= max(t_collar, percentage_of_length * (r.offset - r.onset))``,

and the true positives are a maximum-cardinality bipartite matching of the hits
(Hopcroft-Karp in sed_eval). The size of a maximum matching is unique, so any exact maximum
matching gives sed_eval's count. Here the candidate pairs of all clips are found at once with
sorted searches on the onsets, the conditions are evaluated with the same float64 operations
as sed_eval, pairs that form isolated edges are counted directly and only the rest (rare:
overlapping events) go through an augmenting-path matching.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from envs.events import ClassEvents
from envs.metrics.counts import Counts

I64 = npt.NDArray[np.int64]


def hit_pairs(
    reference: ClassEvents,
    estimated: ClassEvents,
    t_collar_s: float = 0.2,
    percentage_of_length: float = 0.2,
) -> tuple[I64, I64]:
    """All (reference, system) index pairs that satisfy sed_eval's onset and offset rules.

    Args:
        reference: Reference events of one class, sorted by (clip, onset).
        estimated: System events of the same class (any order within a clip).
        t_collar_s: Onset/offset collar in seconds.
        percentage_of_length: Offset tolerance as a fraction of the reference length.

    Returns:
        Two arrays of equal length: reference indices and system indices of the hits.
    """
    nref, nsys = len(reference), len(estimated)
    if nref == 0 or nsys == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    r_on, r_off, r_clip = reference.onset_s, reference.offset_s, reference.clip
    e_on, e_off, e_clip = estimated.onset_s, estimated.offset_s, estimated.clip
    c = float(t_collar_s)
    # A monotone key (clip, onset) -> float lets one searchsorted find each system event's
    # candidate window; the window is widened by a slack larger than the key's rounding
    # error and the exact conditions are checked below, so the key only prunes.
    span = float(max(np.max(np.abs(r_on)), np.max(np.abs(e_on)))) + 2 * c + 1.0
    r_key = r_clip * span + r_on
    e_key = e_clip * span + e_on
    slack = max(1e-6, 8 * np.finfo(np.float64).eps * float(np.max(np.abs(r_key))) + 1e-9)
    lo = np.searchsorted(r_key, e_key - c - slack, side="left")
    hi = np.searchsorted(r_key, e_key + c + slack, side="right")
    # Clamp the windows to the event's own clip.
    lo = np.maximum(lo, np.searchsorted(r_clip, e_clip, side="left"))
    hi = np.minimum(hi, np.searchsorted(r_clip, e_clip, side="right"))
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    e_idx = np.repeat(np.arange(nsys, dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    r_idx = np.repeat(lo - starts, counts) + np.arange(total, dtype=np.int64)
    same = r_clip[r_idx] == e_clip[e_idx]
    onset_ok = np.abs(r_on[r_idx] - e_on[e_idx]) <= c
    ref_len = r_off[r_idx] - r_on[r_idx]
    tol = np.maximum(c, percentage_of_length * ref_len)
    offset_ok = np.abs(r_off[r_idx] - e_off[e_idx]) <= tol
    ok = same & onset_ok & offset_ok
    return r_idx[ok].astype(np.int64), e_idx[ok].astype(np.int64)


def matched_events(r_idx: I64, e_idx: I64) -> I64:
    """System events covered by one maximum bipartite matching of the given edges.

    Isolated edges (both ends of degree one) are matched directly; the remaining edges are
    matched with augmenting paths (Kuhn's algorithm, iterative), which is exact.

    Args:
        r_idx: Left (reference) vertices of the edges.
        e_idx: Right (system) vertices of the edges.

    Returns:
        The matched system-event indices (one per matched pair).
    """
    if len(r_idx) == 0:
        return np.zeros(0, np.int64)
    deg_r = np.bincount(r_idx)
    deg_e = np.bincount(e_idx)
    simple = (deg_r[r_idx] == 1) & (deg_e[e_idx] == 1)
    matched: I64 = e_idx[simple]
    if bool(simple.all()):
        return matched
    rest = np.asarray(_kuhn(r_idx[~simple], e_idx[~simple]), dtype=np.int64)
    return np.concatenate((matched, rest))


def max_matching_size(r_idx: I64, e_idx: I64) -> int:
    """Size of a maximum bipartite matching of the given edges."""
    return len(matched_events(r_idx, e_idx))


def _kuhn(r_idx: I64, e_idx: I64) -> list[int]:
    adj: dict[int, list[int]] = {}
    for r, e in zip(r_idx.tolist(), e_idx.tolist(), strict=True):
        adj.setdefault(e, []).append(r)
    match_r: dict[int, int] = {}  # reference -> system event
    for root in adj:
        # Iterative DFS for an augmenting path from the free system event `root`.
        visited: set[int] = set()
        stack: list[tuple[int, int]] = [(root, 0)]
        path: list[tuple[int, int]] = []  # (system event, reference) edges on the path
        found = False
        while stack:
            e, k = stack[-1]
            nbrs = adj[e]
            if k >= len(nbrs):
                stack.pop()
                if path:
                    path.pop()
                continue
            stack[-1] = (e, k + 1)
            r = nbrs[k]
            if r in visited:
                continue
            visited.add(r)
            path.append((e, r))
            if r not in match_r:
                found = True
                break
            stack.append((match_r[r], 0))
        if found:
            for e, r in path:
                match_r[r] = e
    return list(match_r.values())


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
    r, e = hit_pairs(reference, estimated, t_collar_s, percentage_of_length)
    return Counts(len(reference), len(estimated), max_matching_size(r, e))


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
    r_hit, e_hit = hit_pairs(reference, estimated, t_collar_s, percentage_of_length)
    matched = matched_events(r_hit, e_hit)
    out = np.zeros((n_groups, 3), np.int64)
    out[:, 0] = np.bincount(groups[reference.clip], minlength=n_groups)
    out[:, 1] = np.bincount(groups[estimated.clip], minlength=n_groups)
    out[:, 2] = np.bincount(groups[estimated.clip[matched]], minlength=n_groups)
    return out
