"""Threshold levels of one class's (filtered) scores: runs at any threshold without frames.

A frame is active at threshold θ when ``p > θ``. With ``V`` the sorted distinct values of
the scores and ``rank(p)`` the index of p in V, ``p > θ`` holds exactly when
``rank(p) >= g(θ)``, with ``g(θ)`` the number of distinct values ``<= θ``. A frame starts a
run at level g when its rank is ``>= g`` and its predecessor's (or -1 at a clip start) is
``< g``; it ends one likewise with its successor. Only frames where the rank rises (falls)
can ever start (end) a run, so the runs at any threshold come from two integer
comparisons over those edges instead of a pass over every frame. The threshold sweep
(:mod:`envs.sweep`) needs the ranks only: it finds every clip's runs at each of its levels
in one pass (:func:`envs.kernels.level_runs`), so the edges are found on first query.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from envs.kernels import compact_ranks, level_blocks, rank_edges
from envs.scoreset import ClassScores

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


#: Level blocks of an index: about this many, so a query reads a small slice of the edges.
N_BLOCKS = 1024

Blocks = tuple[int, I64, I64, I64, I64, I64, I64, I64, I64]


@dataclass(frozen=True)
class LevelIndex:
    """Rising and falling rank edges of one class's scores.

    The edges are found on first use (:attr:`edges`): the threshold sweep reads the ranks
    only (:func:`envs.kernels.level_runs`), the queries at one threshold read the edges.

    Attributes:
        values: Sorted distinct score values (float64).
        offsets: Clip boundaries of the frames (n_clips + 1).
        rank: Rank of every frame.
    """

    values: F64
    offsets: I64
    rank: I64

    @functools.cached_property
    def edges(self) -> tuple[I64, I64, I64, I64, I64, I64]:
        """(start_pos, start_prev_rank, start_rank, end_pos, end_next_rank, end_rank): every
        rising edge's global frame position, its previous frame's rank (-1 at a clip start)
        and its own rank; every falling edge's position (the run's last frame), its next
        frame's rank (-1 at a clip end) and its own rank (:func:`envs.kernels.rank_edges`)."""
        return rank_edges(self.rank, self.offsets)

    @property
    def start_pos(self) -> I64:
        """Global frame position of every rising edge."""
        return self.edges[0]

    @property
    def start_prev_rank(self) -> I64:
        """Rank of the frame before every rising edge (-1 at a clip start)."""
        return self.edges[1]

    @property
    def start_rank(self) -> I64:
        """Rank of every rising edge's frame."""
        return self.edges[2]

    @property
    def end_pos(self) -> I64:
        """Global frame position of every falling edge (the run's last frame)."""
        return self.edges[3]

    @property
    def end_next_rank(self) -> I64:
        """Rank of the frame after every falling edge (-1 at a clip end)."""
        return self.edges[4]

    @property
    def end_rank(self) -> I64:
        """Rank of every falling edge's frame."""
        return self.edges[5]

    @staticmethod
    def build(scores: ClassScores) -> LevelIndex:
        """Index the scores (already median-filtered if a filter is wanted)."""
        values, rank = np.unique(scores.values.astype(np.float64), return_inverse=True)
        return LevelIndex.from_ranks(rank.astype(np.int64), values, scores.offsets)

    @staticmethod
    def from_ranks(rank: I64, values: F64, offsets: I64) -> LevelIndex:
        """Index frames given as ranks into ``values`` (sorted, possibly with unused entries).

        A median filter commutes with the monotone map value -> rank, so a class is ranked
        once and each kernel filters the ranks; unused values are dropped here in O(n).
        """
        rank = np.ascontiguousarray(rank, np.int64)
        compact, used = compact_ranks(rank, len(values))
        if not used.all():
            rank, values = compact, values[used]
        return LevelIndex(values, offsets, rank)

    @functools.cached_property
    def blocks(self) -> Blocks:
        """The edges bucketed by level (built on first use; :func:`envs.kernels.block_runs`).

        A start edge applies at the levels in (start_prev_rank, start_rank], an end edge at
        (end_next_rank, end_rank]; the levels are cut into about :data:`N_BLOCKS` blocks, each
        listing the (position, low, high) of the edges that touch it, in frame order. With few
        distinct values a block is one level and holds exactly that level's edges.

        Returns:
            (block size in levels, start ptr, pos, low, high, end ptr, pos, low, high).
        """
        n_levels = len(self.values) + 1
        size, s_ptr, s_idx = level_blocks(self.start_prev_rank, self.start_rank, n_levels, N_BLOCKS)
        _, e_ptr, e_idx = level_blocks(self.end_next_rank, self.end_rank, n_levels, N_BLOCKS)
        return (
            size,
            s_ptr,
            self.start_pos[s_idx],
            self.start_prev_rank[s_idx],
            self.start_rank[s_idx],
            e_ptr,
            self.end_pos[e_idx],
            self.end_next_rank[e_idx],
            self.end_rank[e_idx],
        )

    def level(self, threshold: float) -> int:
        """g(θ): how many distinct values are <= θ."""
        return int(self.values.searchsorted(np.float64(threshold), side="right"))

    def runs_at(self, threshold: float) -> tuple[I64, I64]:
        """Runs of ``p > threshold``: global start positions and exclusive ends, in order."""
        g = self.level(threshold)
        s = self.start_pos[(self.start_rank >= g) & (self.start_prev_rank < g)]
        e = self.end_pos[(self.end_rank >= g) & (self.end_next_rank < g)] + 1
        return s, e

    def hysteresis_runs_at(self, on: float, off: float) -> tuple[I64, I64]:
        """Runs that start at a frame with ``p > on`` and continue while ``p > off``.

        Each run of ``p > off`` yields one run from its first frame above ``on`` (which
        starts a run of ``p > on``) to its end; runs never above ``on`` yield nothing.
        """
        s_off, e_off = self.runs_at(off)
        s_on, _ = self.runs_at(on)
        if len(s_on) == 0:
            return s_on, s_on
        j = np.searchsorted(s_on, s_off, side="left")
        first = s_on[np.minimum(j, len(s_on) - 1)]
        valid = (j < len(s_on)) & (first < e_off)
        return first[valid], e_off[valid]
