"""Compiled inner loops of the evaluator and the sweeps (numba, no Python objects).

Each kernel does in one pass what the vectorized numpy code did in tens of array operations,
with the same float64 arithmetic, so results are bit for bit those of the reference paths
(tested against them and against sed_eval):

- :func:`level_blocks`, :func:`block_runs`, :func:`hysteresis_runs`: the runs of a class's
  frames at a threshold level, from the rank edges of :class:`envs.levels.LevelIndex`
  bucketed by level, so a query reads only the edges near its level;
- :func:`majority_runs`: the runs of a median-filtered class at one threshold without ranking
  or filtering the values: a window's median is ``> θ`` exactly when more than half of its
  values are (reflect boundary as ``scipy.ndimage.median_filter``);
- :func:`clean_decode`: gap filling, minimum duration and decoding to seconds;
- :func:`small_alphabet_median`, :func:`compact_ranks`, :func:`rank_edges`: the median filter
  of a quantized class and its level index;
- :func:`level_runs`: every clip's runs at each of its own levels, for the threshold sweep.

The matching of events against the truth is in :mod:`envs.matching`.

Compiled on first use and cached on disk next to this module (``__pycache__``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@njit(cache=True, nogil=True)
def level_blocks(
    low: I64, high: I64, n_levels: int, n_blocks: int
) -> tuple[int, I64, I64]:  # pragma: no cover - compiled
    """Bucket edges by the levels at which they apply, for output-sensitive run queries.

    Edge i applies at the levels g with ``low[i] < g <= high[i]``. The levels
    ``0..n_levels - 1`` are cut into blocks of ``size`` levels; every edge is listed in each
    block its levels touch, in edge order (frame order, so each list is too).

    Returns:
        (size, ptr, idx): block b lists the edges ``idx[ptr[b]:ptr[b + 1]]``.
    """
    size = max(1, (n_levels + n_blocks - 1) // n_blocks)
    n_b = (n_levels + size - 1) // size
    count = np.zeros(n_b + 1, np.int64)
    for i in range(low.size):
        for blk in range(max(low[i] + 1, 0) // size, high[i] // size + 1):
            count[blk + 1] += 1
    ptr = np.cumsum(count)
    fill = ptr[:-1].copy()
    idx = np.empty(ptr[-1], np.int64)
    for i in range(low.size):
        for blk in range(max(low[i] + 1, 0) // size, high[i] // size + 1):
            idx[fill[blk]] = i
            fill[blk] += 1
    return size, ptr, idx


@njit(cache=True, nogil=True)
def block_runs(
    blocks: tuple[int, I64, I64, I64, I64, I64, I64, I64, I64], g: int
) -> tuple[I64, I64]:  # pragma: no cover - compiled
    """Global starts and exclusive ends of the runs of frames with rank >= g.

    A rising edge starts a run at level g when its rank is >= g and its predecessor's is < g;
    a falling edge ends one likewise with its successor (see :mod:`envs.levels`). ``blocks``
    is :attr:`envs.levels.LevelIndex.blocks`: only the edges listed in g's block are read.
    """
    size, s_ptr, s_pos, s_low, s_high, e_ptr, e_pos, e_low, e_high = blocks
    b = g // size
    if b + 1 >= s_ptr.size:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lo, hi = s_ptr[b], s_ptr[b + 1]
    starts = np.empty(hi - lo, np.int64)
    n = 0
    for j in range(lo, hi):
        if s_low[j] < g <= s_high[j]:
            starts[n] = s_pos[j]
            n += 1
    lo, hi = e_ptr[b], e_ptr[b + 1]
    ends = np.empty(n, np.int64)
    m = 0
    for j in range(lo, hi):
        if e_low[j] < g <= e_high[j] and m < n:  # as many ends as starts, by construction
            ends[m] = e_pos[j] + 1
            m += 1
    return starts[:n], ends[:m]


@njit(cache=True, nogil=True)
def hysteresis_runs(s_off: I64, e_off: I64, s_on: I64) -> tuple[I64, I64]:  # pragma: no cover
    """Runs of ``p > off`` that hold a frame ``p > on``, each from its first such frame.

    Args:
        s_off: Starts of the runs above ``off`` (sorted).
        e_off: Their exclusive ends.
        s_on: Starts of the runs above ``on`` (sorted; every one lies inside a run above off).
    """
    starts = np.empty(s_off.size, np.int64)
    ends = np.empty(s_off.size, np.int64)
    n = 0
    j = 0
    for i in range(s_off.size):
        while j < s_on.size and s_on[j] < s_off[i]:
            j += 1
        if j < s_on.size and s_on[j] < e_off[i]:
            starts[n] = s_on[j]
            ends[n] = e_off[i]
            n += 1
    return starts[:n], ends[:n]


@njit(cache=True, nogil=True)
def _reflect(i: int, length: int) -> int:  # pragma: no cover - compiled
    """scipy.ndimage's ``reflect`` index (``d c b a | a b c d | d c b a``), any distance."""
    period = 2 * length
    i = i % period
    if i < 0:
        i += period
    return i if i < length else period - 1 - i


@njit(cache=True, nogil=True)
def majority_runs(
    values: npt.NDArray[np.float32], offsets: I64, threshold: float, kernel: int
) -> tuple[I64, I64]:  # pragma: no cover - compiled
    """Runs of ``median_k(p) > threshold`` per clip (reflect boundary), global positions.

    The median of an odd window is ``> θ`` exactly when at least ``(k + 1) / 2`` of its values
    are, so a sliding count of the values above θ decides every frame. Every non-empty clip
    must be longer than ``kernel // 2`` frames: shorter ones reflect more than once, which
    scipy does its own way (callers send such sets through scipy's filter).
    """
    half = kernel // 2
    need = half + 1
    n_frames = values.size
    above = np.empty(n_frames, np.bool_)
    for i in range(n_frames):
        above[i] = np.float64(values[i]) > threshold
    active = np.empty(n_frames, np.bool_)
    for c in range(offsets.size - 1):
        lo = offsets[c]
        length = offsets[c + 1] - lo
        if length == 0:
            continue
        if kernel == 1:
            for t in range(length):
                active[lo + t] = above[lo + t]
            continue
        count = 0
        for d in range(-half, half + 1):
            if above[lo + _reflect(d, length)]:
                count += 1
        active[lo] = count >= need
        for t in range(1, length):
            enter = t + half
            leave = t - half - 1
            if above[lo + (enter if enter < length else _reflect(enter, length))]:
                count += 1
            if above[lo + (leave if leave >= 0 else _reflect(leave, length))]:
                count -= 1
            active[lo + t] = count >= need
    return _runs(active, offsets)


@njit(cache=True, nogil=True)
def majority_hysteresis_runs(
    values: npt.NDArray[np.float32], offsets: I64, on: float, off: float, kernel: int
) -> tuple[I64, I64]:  # pragma: no cover - compiled
    """Hysteresis runs of the median-filtered class (start above ``on``, go on above ``off``)."""
    s_off, e_off = majority_runs(values, offsets, off, kernel)
    s_on, _ = majority_runs(values, offsets, on, kernel)
    return hysteresis_runs(s_off, e_off, s_on)


@njit(cache=True, nogil=True)
def _runs(active: npt.NDArray[np.bool_], offsets: I64) -> tuple[I64, I64]:  # pragma: no cover
    n = 0
    for c in range(offsets.size - 1):
        for t in range(offsets[c], offsets[c + 1]):
            if active[t] and (t == offsets[c] or not active[t - 1]):
                n += 1
    starts = np.empty(n, np.int64)
    ends = np.empty(n, np.int64)
    j = 0
    for c in range(offsets.size - 1):
        lo, hi = offsets[c], offsets[c + 1]
        t = lo
        while t < hi:
            if active[t]:
                starts[j] = t
                while t < hi and active[t]:
                    t += 1
                ends[j] = t
                j += 1
            else:
                t += 1
    return starts, ends


@njit(cache=True, nogil=True)
def clean_decode(
    starts: I64, ends: I64, offsets: I64, hop: float, fill_gap_s: float, min_duration_s: float, durations: F64
) -> tuple[I64, F64, F64]:  # pragma: no cover - compiled
    """Runs (global frames, sorted) to events: clip, onset and offset in seconds.

    Gaps between consecutive runs of a clip shorter than ``fill_gap_s`` (gap frames x hop) are
    filled, then runs shorter than ``min_duration_s`` dropped; a run i..j becomes
    ``[i * hop, (j + 1) * hop]``, its offset clipped to the clip's duration where known (NaN:
    unknown), and dropped if it would start at or after the end. ``offsets`` maps a global
    frame to its clip (runs never cross clips).
    """
    n = starts.size
    clip = np.empty(n, np.int64)
    s = np.empty(n, np.int64)
    e = np.empty(n, np.int64)
    c = 0
    m = 0
    for i in range(n):
        while offsets[c + 1] <= starts[i]:
            c += 1
        ls = starts[i] - offsets[c]
        le = ends[i] - offsets[c]
        if m > 0 and fill_gap_s > 0 and clip[m - 1] == c and (ls - e[m - 1]) * hop < fill_gap_s:
            e[m - 1] = le
        else:
            clip[m] = c
            s[m] = ls
            e[m] = le
            m += 1
    out_clip = np.empty(m, np.int64)
    onset = np.empty(m, np.float64)
    offset = np.empty(m, np.float64)
    k = 0
    for i in range(m):
        if min_duration_s > 0 and not (e[i] - s[i]) * hop >= min_duration_s:
            continue
        on = s[i] * hop
        off = e[i] * hop
        dur = durations[clip[i]]
        if not np.isnan(dur):
            if off > dur:
                off = dur
            if not on < dur:
                continue
        out_clip[k] = clip[i]
        onset[k] = on
        offset[k] = off
        k += 1
    return out_clip[:k], onset[:k], offset[:k]


@njit(cache=True, nogil=True)
def small_alphabet_median(q: I64, offsets: I64, kernel: int, n_levels: int) -> I64:  # pragma: no cover
    """Median filter (reflect boundary) of small integer values ``0..n_levels - 1`` per clip.

    A histogram of the window and the running median move one frame at a time (the median
    is the smallest value whose cumulative count reaches ``kernel // 2 + 1``), so a frame
    costs O(1) amortized whatever the kernel. Clips no longer than ``kernel // 2`` are left
    at 0 for the caller (scipy reflects those its own way).
    """
    half = kernel // 2
    need = half + 1
    out = np.zeros(q.size, np.int64)
    hist = np.zeros(n_levels, np.int64)
    for c in range(offsets.size - 1):
        lo = offsets[c]
        length = offsets[c + 1] - lo
        if length <= half:
            continue
        hist[:] = 0
        for d in range(-half, half + 1):
            hist[q[lo + _reflect(d, length)]] += 1
        m = 0
        below = 0
        while below + hist[m] < need:
            below += hist[m]
            m += 1
        out[lo] = m
        for t in range(1, length):
            enter = t + half
            leave = t - half - 1
            x = q[lo + (enter if enter < length else _reflect(enter, length))]
            y = q[lo + (leave if leave >= 0 else _reflect(leave, length))]
            hist[x] += 1
            if x < m:
                below += 1
            hist[y] -= 1
            if y < m:
                below -= 1
            while below >= need:
                m -= 1
                below -= hist[m]
            while below + hist[m] < need:
                below += hist[m]
                m += 1
            out[lo + t] = m
    return out


@njit(cache=True, nogil=True)
def compact_ranks(rank: I64, n_values: int) -> tuple[I64, npt.NDArray[np.bool_]]:  # pragma: no cover
    """Ranks renumbered over the values that occur (``rank`` itself when all occur), and
    which values occur."""
    used = np.zeros(n_values, np.bool_)
    for i in range(rank.size):
        used[rank[i]] = True
    if used.all():  # nothing to renumber (e.g. a filtered threshold grid)
        return rank, used
    new = np.empty(n_values, np.int64)
    k = 0
    for v in range(n_values):
        new[v] = k
        if used[v]:
            k += 1
    out = np.empty(rank.size, np.int64)
    for i in range(rank.size):
        out[i] = new[rank[i]]
    return out, used


@njit(cache=True, nogil=True)
def rank_edges(rank: I64, offsets: I64) -> tuple[I64, I64, I64, I64, I64, I64]:  # pragma: no cover
    """Rising and falling rank edges per clip (see :class:`envs.levels.LevelIndex`).

    A frame is a rising edge when its rank exceeds its predecessor's (-1 at a clip start),
    a falling edge when it exceeds its successor's (-1 at a clip end).

    Returns:
        (start_pos, start_prev_rank, start_rank, end_pos, end_next_rank, end_rank).
    """
    n_rise = 0
    n_fall = 0
    for c in range(offsets.size - 1):
        lo, hi = offsets[c], offsets[c + 1]
        for t in range(lo, hi):
            prev = rank[t - 1] if t > lo else -1
            nxt = rank[t + 1] if t + 1 < hi else -1
            if rank[t] > prev:
                n_rise += 1
            if rank[t] > nxt:
                n_fall += 1
    s_pos = np.empty(n_rise, np.int64)
    s_prev = np.empty(n_rise, np.int64)
    s_rank = np.empty(n_rise, np.int64)
    e_pos = np.empty(n_fall, np.int64)
    e_next = np.empty(n_fall, np.int64)
    e_rank = np.empty(n_fall, np.int64)
    i = 0
    j = 0
    for c in range(offsets.size - 1):
        lo, hi = offsets[c], offsets[c + 1]
        for t in range(lo, hi):
            prev = rank[t - 1] if t > lo else -1
            nxt = rank[t + 1] if t + 1 < hi else -1
            if rank[t] > prev:
                s_pos[i] = t
                s_prev[i] = prev
                s_rank[i] = rank[t]
                i += 1
            if rank[t] > nxt:
                e_pos[j] = t
                e_next[j] = nxt
                e_rank[j] = rank[t]
                j += 1
    return s_pos, s_prev, s_rank, e_pos, e_next, e_rank


@njit(cache=True, nogil=True)
def _shell_sort(a: I64, n: int) -> None:  # pragma: no cover - compiled
    """Sort ``a[:n]`` in place (Shell sort, Ciura's gaps): no allocation, a fast compile, and
    quick for the tens to hundreds of levels a clip has."""
    for gap in (701, 301, 132, 57, 23, 10, 4, 1):
        for i in range(gap, n):
            v = a[i]
            j = i
            while j >= gap and a[j - gap] > v:
                a[j] = a[j - gap]
                j -= gap
            a[j] = v


@njit(cache=True, nogil=True)
def _dense_ranks(
    rank: I64, lo: int, hi: int, levels: I64, pos: I64, stamp: I64, table: I64, visit: int
) -> int:  # pragma: no cover - compiled
    """A clip's distinct ranks, ascending, into ``levels[:m]``, and every frame's position
    among them into ``pos[:hi - lo]``; returns m.

    ``stamp`` and ``table`` are scratch arrays over all ranks: ``stamp[r] == visit`` marks r
    as seen in this call (``visit`` differs between calls), ``table[r]`` is its position.
    Only the m distinct ranks are sorted (a quantized class has a few, a raw one at most
    one per frame).
    """
    m = 0
    for t in range(lo, hi):
        r = rank[t]
        if stamp[r] != visit:
            stamp[r] = visit
            levels[m] = r
            m += 1
    _shell_sort(levels, m)
    for k in range(m):
        table[levels[k]] = k
    for t in range(lo, hi):
        pos[t - lo] = table[rank[t]]
    return m


@njit(cache=True, nogil=True)
def level_runs(
    rank: I64, offsets: I64, clip_lo: int, clip_hi: int
) -> tuple[I64, I64, I64, I64, I64]:  # pragma: no cover - compiled
    """The runs of every clip at each of its own levels, for the threshold sweep.

    A clip's levels are its distinct ranks ``r_0 < r_1 < ...``; level k is the pseudo-clip
    "frames with rank >= r_k", whose runs are the clip's events at every threshold between
    its ``r_{k-1}``-th and ``r_k``-th distinct value. With ``pos`` a frame's position among
    the clip's levels, a frame above its predecessor (-1 at a clip start) starts a run at
    the levels (pos[t - 1], pos[t]]; one above its successor ends one likewise. A first pass
    finds each clip's levels, every frame's pos and the run count, a second writes every
    level's runs in frame order.

    Args:
        rank: Rank of every frame (all clips).
        offsets: Clip boundaries of the frames (n_clips + 1).
        clip_lo: First clip handled.
        clip_hi: One past the last clip handled.

    Returns:
        (level_clip, level_rank, run_level, run_start, run_end): per level (ordered by clip,
        then rank) its clip and rank; per run (ordered by level, then start) its level index
        and clip-local start and exclusive end frame.
    """
    n_clips = clip_hi - clip_lo
    f_lo = offsets[clip_lo]
    n_frames = offsets[clip_hi] - f_lo
    n_values = 0
    for t in range(f_lo, f_lo + n_frames):
        n_values = max(n_values, rank[t] + 1)
    stamp = np.full(n_values, -1, np.int64)
    table = np.empty(n_values, np.int64)
    # Pass 1: each clip's levels (into `levels`) and every frame's position among them.
    levels = np.empty(n_frames, np.int64)
    pos = np.empty(n_frames, np.int64)
    level_ptr = np.zeros(n_clips + 1, np.int64)
    n_runs = 0
    longest = 0
    for c in range(clip_lo, clip_hi):
        lo, hi = offsets[c], offsets[c + 1]
        l0 = level_ptr[c - clip_lo]
        m = 0
        if hi > lo:
            m = _dense_ranks(rank, lo, hi, levels[l0:], pos[lo - f_lo :], stamp, table, c)
        below = -1
        for t in range(lo - f_lo, hi - f_lo):
            if pos[t] > below:
                n_runs += pos[t] - below
            below = pos[t]
        level_ptr[c - clip_lo + 1] = l0 + m
        longest = max(longest, m)
    n_levels = level_ptr[n_clips]
    level_clip = np.empty(n_levels, np.int64)
    level_rank = levels[:n_levels].copy()
    run_level = np.empty(n_runs, np.int64)
    run_start = np.empty(n_runs, np.int64)
    run_end = np.empty(n_runs, np.int64)
    s_ptr = np.empty(longest + 1, np.int64)
    e_ptr = np.empty(longest + 1, np.int64)
    # Pass 2: each level's first run slot (from its run count), then the runs in frame order.
    r0 = 0
    for c in range(clip_lo, clip_hi):
        l0 = level_ptr[c - clip_lo]
        m = level_ptr[c - clip_lo + 1] - l0
        if m == 0:
            continue
        level_clip[l0 : l0 + m] = c
        p = pos[offsets[c] - f_lo : offsets[c + 1] - f_lo]
        n = p.size
        # Run counts per level: a start at the levels (p[i - 1], p[i]] counts for each.
        s_ptr[: m + 1] = 0
        below = -1
        for i in range(n):
            if p[i] > below:
                s_ptr[below + 1] += 1
                s_ptr[p[i] + 1] -= 1
            below = p[i]
        count = 0
        total = r0
        for k in range(m):
            count += s_ptr[k]
            s_ptr[k] = total
            e_ptr[k] = total
            run_level[total : total + count] = l0 + k
            total += count
        for i in range(n):
            below = p[i - 1] if i > 0 else -1
            for k in range(below + 1, p[i] + 1):
                run_start[s_ptr[k]] = i
                s_ptr[k] += 1
            after = p[i + 1] if i + 1 < n else -1
            for k in range(after + 1, p[i] + 1):
                run_end[e_ptr[k]] = i + 1
                e_ptr[k] += 1
        r0 = total
    return level_clip, level_rank, run_level, run_start, run_end
