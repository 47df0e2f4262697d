"""Compiled event matching: sed_eval's true positives per clip, and a class's counts in one call.

- :func:`match_units`: sed_eval's true positives, a maximum bipartite matching of the hits per
  clip (or per pseudo-clip of a sweep), by augmenting paths (exact), with the same float64
  operations as sed_eval;
- :func:`group_counts`: [nref, nsys, ntp] per clip group of one class's events;
- :func:`level_counts`: the same for a ``frames`` class at a threshold level, from its level
  index (runs, clean-up, decoding and matching in one compiled call).

Compiled on first use and cached on disk next to this module (``__pycache__``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from envs.kernels import block_runs, clean_decode, hysteresis_runs

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@njit(cache=True, nogil=True)
def match_units(
    est_unit: I64,
    est_on: F64,
    est_off: F64,
    unit_clip: I64,
    ref_first: I64,
    ref_on: F64,
    ref_off: F64,
    t_collar_s: float,
    percentage_of_length: float,
) -> I64:  # pragma: no cover - compiled
    """True positives per unit: a maximum matching of sed_eval's hits within each unit.

    Args:
        est_unit: Unit (clip, or pseudo-clip of a sweep) of every system event, ascending.
        est_on: Onsets (s).
        est_off: Offsets (s).
        unit_clip: The real clip whose reference events each unit is matched against.
        ref_first: Reference events of clip c are ``ref_first[c]:ref_first[c + 1]``.
        ref_on: Reference onsets (s).
        ref_off: Reference offsets (s).
        t_collar_s: Onset collar (s); the offset collar is ``max(t_collar_s, pct * length)``.
        percentage_of_length: Offset tolerance as a fraction of the reference length.

    Returns:
        Matched pairs per unit (``unit_clip.size`` entries).
    """
    n_units = unit_clip.size
    ntp = np.zeros(n_units, np.int64)
    n = est_unit.size
    max_r = 0
    for c in range(ref_first.size - 1):
        max_r = max(max_r, ref_first[c + 1] - ref_first[c])
    max_e = 0
    a = 0
    while a < n:
        b = a
        while b < n and est_unit[b] == est_unit[a]:
            b += 1
        max_e = max(max_e, b - a)
        a = b
    # One adjacency buffer for every unit (row-major: its events x its clip's references).
    adj = np.zeros(max_e * max_r, np.bool_)
    match_ref = np.empty(max_r, np.int64)
    visited = np.empty(max_r, np.bool_)
    stacks = np.empty((3, max_e + 1), np.int64)
    a = 0
    while a < n:
        u = est_unit[a]
        b = a
        while b < n and est_unit[b] == u:
            b += 1
        clip = unit_clip[u]
        r0 = ref_first[clip]
        nr = ref_first[clip + 1] - r0
        ne = b - a
        if nr > 0:
            n_hits = 0
            for i in range(ne):
                e_on = est_on[a + i]
                e_off = est_off[a + i]
                for j in range(nr):
                    hit = False
                    r_on = ref_on[r0 + j]
                    if abs(r_on - e_on) <= t_collar_s:
                        r_off = ref_off[r0 + j]
                        tol = max(t_collar_s, percentage_of_length * (r_off - r_on))
                        hit = abs(r_off - e_off) <= tol
                    adj[i * nr + j] = hit
                    n_hits += hit
            if n_hits > 0:
                if ne == 1 or nr == 1 or n_hits == 1:
                    ntp[u] = 1  # one side of one: any hit is a maximum matching
                else:
                    ntp[u] = _max_matching(adj, ne, nr, match_ref, visited, stacks)
        a = b
    return ntp


@njit(cache=True, nogil=True)
def _max_matching(
    adj: npt.NDArray[np.bool_],
    ne: int,
    nr: int,
    match_ref: I64,
    visited: npt.NDArray[np.bool_],
    stacks: npt.NDArray[np.int64],
) -> int:  # pragma: no cover - compiled
    """Size of a maximum matching of a small bipartite graph (Kuhn's augmenting paths).

    ``adj[e * nr + r]``: event e hits reference r. ``match_ref``, ``visited`` (at least ``nr``)
    and ``stacks`` (3 x at least ``ne + 1``) are work buffers.
    """
    for j in range(nr):
        match_ref[j] = -1
    stack_e, stack_k, path_r = stacks[0], stacks[1], stacks[2]
    size = 0
    for root in range(ne):
        for j in range(nr):
            visited[j] = False
        depth = 0
        stack_e[0] = root
        stack_k[0] = 0
        while depth >= 0:
            e = stack_e[depth]
            k = stack_k[depth]
            if k == nr:
                depth -= 1
                continue
            stack_k[depth] = k + 1
            if not adj[e * nr + k] or visited[k]:
                continue
            visited[k] = True
            path_r[depth] = k
            if match_ref[k] == -1:
                for d in range(depth + 1):
                    match_ref[path_r[d]] = stack_e[d]
                size += 1
                break
            depth += 1
            stack_e[depth] = match_ref[k]
            stack_k[depth] = 0
    return size



@njit(cache=True, nogil=True)
def group_counts(
    clip: I64,
    onset: F64,
    offset: F64,
    ref_first: I64,
    ref_on: F64,
    ref_off: F64,
    t_collar_s: float,
    percentage_of_length: float,
    groups: I64,
    n_groups: int,
) -> I64:  # pragma: no cover - compiled
    """[nref, nsys, ntp] per clip group of one class's events (sorted by clip).

    Args:
        clip: Clip of every system event (ascending).
        onset: Onsets (s).
        offset: Offsets (s).
        ref_first: Reference events of clip c are ``ref_first[c]:ref_first[c + 1]``.
        ref_on: Reference onsets (s).
        ref_off: Reference offsets (s).
        t_collar_s: Collar (s).
        percentage_of_length: Offset tolerance fraction.
        groups: Group of every clip.
        n_groups: Number of groups.
    """
    out = np.zeros((n_groups, 3), np.int64)
    for c in range(ref_first.size - 1):
        out[groups[c], 0] += ref_first[c + 1] - ref_first[c]
    for i in range(clip.size):
        out[groups[clip[i]], 1] += 1
    units = np.arange(ref_first.size - 1)
    pct = percentage_of_length
    ntp = match_units(clip, onset, offset, units, ref_first, ref_on, ref_off, t_collar_s, pct)
    for c in range(ntp.size):
        if ntp[c]:
            out[groups[c], 2] += ntp[c]
    return out


@njit(cache=True, nogil=True)
def level_counts(
    blocks: tuple[int, I64, I64, I64, I64, I64, I64, I64, I64],
    g_on: int,
    g_off: int,
    offsets: I64,
    hop: float,
    fill_gap_s: float,
    min_duration_s: float,
    durations: F64,
    refs: tuple[I64, F64, F64],
    metric: tuple[float, float],
    groups: I64,
    n_groups: int,
) -> I64:  # pragma: no cover - compiled
    """Counts per group of a ``frames`` class at a threshold level (``g_off < 0``: no hysteresis).

    ``blocks`` are :attr:`envs.levels.LevelIndex.blocks`; ``refs`` is
    (ref_first, ref_on, ref_off); ``metric`` is (collar, pct).
    """
    starts, ends = block_runs(blocks, g_on)
    if g_off >= 0:
        s_off, e_off = block_runs(blocks, g_off)
        starts, ends = hysteresis_runs(s_off, e_off, starts)
    clip, on, off = clean_decode(starts, ends, offsets, hop, fill_gap_s, min_duration_s, durations)
    return group_counts(clip, on, off, refs[0], refs[1], refs[2], metric[0], metric[1], groups, n_groups)
