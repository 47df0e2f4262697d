"""What one replica of the RL environment reads and what it shows the agent.

Each replica reads its own shards (:func:`replica_shards`, :func:`load_shards`), so scores
never travel through the driver; a clip is shown as its (frames, classes) probability matrix
(:func:`observation`, :func:`observations` for every clip at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from envs.errors import SedtuneInputError
from envs.evalset import EvalSet, open_eval_set
from envs.scoreset import ClassScores

F32 = npt.NDArray[np.float32]


class DataRefLike(Protocol):
    """Where a set lives (``envs.problem.DataRef`` has this shape)."""

    @property
    def scores(self) -> str: ...

    @property
    def ground_truth(self) -> str: ...

    @property
    def durations(self) -> str | None: ...

    @property
    def clips(self) -> tuple[str, ...] | None: ...

    @property
    def classes(self) -> tuple[str, ...] | None: ...


def replica_shards(
    n_shards: int, worker_index: int, vector_index: int, num_workers: int, num_envs: int
) -> list[int]:
    """Which shards one environment replica reads: round-robin over replicas.

    Replica ``r = (worker - 1) * num_envs + vector`` (the local worker 0, which only samples
    when there are no remote workers, counts as worker 1) of ``R = max(num_workers, 1) *
    num_envs`` replicas reads shards ``r, r + R, r + 2R, ...``; with fewer shards than
    replicas it reads shard ``r mod n_shards``, so every replica has data.

    Args:
        n_shards: Shards to distribute (>= 1).
        worker_index: EnvRunner index (0 = local, 1.. = remote).
        vector_index: Index of the environment within its EnvRunner.
        num_workers: Number of remote EnvRunners (0 = only the local one).
        num_envs: Environments per EnvRunner.

    Returns:
        Indices into the shard list, ascending.

    Raises:
        ValueError: If an index is out of range.
    """
    if n_shards < 1 or num_envs < 1 or num_workers < 0:
        raise ValueError(f"`n_shards >= 1, num_envs >= 1, num_workers >= 0` must hold, but got "
                         f"({n_shards=}, {num_envs=}, {num_workers=})")
    if not 0 <= worker_index <= num_workers or not 0 <= vector_index < num_envs:
        raise ValueError(
            f"`0 <= worker_index <= num_workers` and `0 <= vector_index < num_envs` must hold, but got "
            f"({worker_index=}, {num_workers=}, {vector_index=}, {num_envs=})"
        )
    n_replicas = max(num_workers, 1) * num_envs
    replica = (max(worker_index, 1) - 1) * num_envs + vector_index
    if n_shards >= n_replicas:
        return list(range(replica, n_shards, n_replicas))
    return [replica % n_shards]


def load_shards(
    data: DataRefLike, shard_indices: Sequence[int], shard_paths: Sequence[str] | None = None
) -> EvalSet:
    """Open some shards of a score set with their ground truth, restricted to ``data.clips``.

    Args:
        data: Where the set lives and which clips are in play.
        shard_indices: Shards to read (indices into the set's shard list).
        shard_paths: The set's shard paths in order, if known (then only the chosen shards'
            headers are read; otherwise every shard's clip names are listed first).

    Returns:
        The chosen shards' clips that are in ``data.clips`` (all if None), in shard order,
        evaluated on ``data.classes`` (all of the score set's if None).

    Raises:
        SedtuneInputError: No such shard, no clip in play, or shards that do not match the
            ground truth.
    """
    aligned = open_eval_set(
        data.scores, data.ground_truth, data.durations, shards=shard_indices, shard_paths=shard_paths
    )
    names = aligned.filenames
    wanted = None if data.clips is None else set(data.clips)
    keep = np.array([i for i, n in enumerate(names) if wanted is None or n in wanted], np.int64)
    if len(keep) == 0:
        raise SedtuneInputError(f"{data.scores}: shards {list(shard_indices)} hold none of the clips in play")
    if data.classes is not None:
        aligned = aligned.restricted(data.classes)
    return aligned if len(keep) == len(names) else aligned.subset(keep)


def observation(scores: Sequence[ClassScores], clip: int, n_frames_max: int) -> F32:
    """One clip's probability matrix (frames, classes), zero-padded or cut to ``n_frames_max``.

    Args:
        scores: Every class's scores, in class order.
        clip: Clip index.
        n_frames_max: Frames of the observation.

    Returns:
        Array (n_frames_max, n_classes), float32 in [0, 1].
    """
    out = np.zeros((n_frames_max, len(scores)), np.float32)
    for j, cs in enumerate(scores):
        lo = int(cs.offsets[clip])
        hi = min(int(cs.offsets[clip + 1]), lo + n_frames_max)
        out[: hi - lo, j] = cs.values[lo:hi]
    return out


def observations(scores: Sequence[ClassScores], n_frames_max: int) -> F32:
    """Every clip's observation at once, array (n_clips, n_frames_max, n_classes)."""
    n = len(scores[0].offsets) - 1 if scores else 0
    out = np.zeros((n, n_frames_max, len(scores)), np.float32)
    for j, cs in enumerate(scores):
        lengths = np.diff(cs.offsets)
        clip = np.repeat(np.arange(n), lengths)
        frame = np.arange(int(cs.offsets[-1])) - np.repeat(cs.offsets[:-1], lengths)
        keep = frame < n_frames_max
        out[clip[keep], frame[keep], j] = cs.values[keep]
    return out
