"""Random, seeded partitions of a set's clips: the tuning / held-out split and the CV folds.

A job splits its clips by name (:func:`split_names`), not by the row order of its ground-truth
file: the same clips and seed give the same split, and the same tuning order (hence the same
cross-validation folds), however the file's rows are ordered.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


def split_clips(n_clips: int, heldout_fraction: float, seed: int) -> tuple[I64, I64]:
    """Random tuning / held-out split of clip indices (deterministic by seed).

    Args:
        n_clips: Clips in the set (at least 2).
        heldout_fraction: Share of the clips held out, in (0, 1); at least one clip on each side.
        seed: Seed of the permutation.

    Returns:
        (tuning indices, held-out indices), each sorted.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_clips)
    n_held = round(n_clips * heldout_fraction)
    n_held = min(max(n_held, 1), n_clips - 1)
    return np.sort(perm[n_held:]).astype(np.int64), np.sort(perm[:n_held]).astype(np.int64)


def fold_ids(n_clips: int, n_folds: int, seed: int) -> I64:
    """Balanced random fold id per clip (deterministic by seed): fold sizes differ by at most 1."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n_clips, dtype=np.int64) % n_folds
    rng.shuffle(ids)
    return ids


def split_names(filenames: Sequence[str], heldout_fraction: float, seed: int) -> tuple[I64, I64]:
    """Tuning / held-out split of named clips, independent of the order of ``filenames``.

    :func:`split_clips` applied to the clips sorted by name: the result depends on the set of
    names and the seed only.

    Args:
        filenames: Clip names (distinct), in any order.
        heldout_fraction: Share of the clips held out, in (0, 1).
        seed: Seed of the permutation.

    Returns:
        (tuning indices, held-out indices) into ``filenames``, each in name order.
    """
    by_name = np.argsort(np.asarray(filenames, dtype=object), kind="stable").astype(np.int64)
    tune, held = split_clips(len(by_name), heldout_fraction, seed)
    return by_name[tune], by_name[held]
