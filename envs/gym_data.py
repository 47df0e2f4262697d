"""What one replica of the RL environment reads and what it shows the agent.

Each replica reads its own shards (:func:`replica_shards`, :func:`load_shards`), so scores
never travel through the driver. The agent decides one (clip, class) at a time and sees that
pair through :func:`clip_features`: what predicts where the class's best threshold lies on
this clip (the class's score levels and peaks relative to the table's threshold, how many
change points its decoder finds, how confident the other classes are, the clip's overall
score level).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from envs.action_grid import ResidualGrid
from envs.boxes import detect_boxes
from envs.errors import SedtuneInputError
from envs.evalset import EvalSet, open_eval_set
from envs.params import ClassParams
from envs.scoreset import ClassScores
from envs.stack import median_filter_values, runs

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Strongest units (boxes or frame runs) of a (clip, class) whose confidences are shown.
TOP_UNITS = 3
#: Score quantiles of a (clip, class) that are shown (1.0: the maximum).
QUANTILES = (0.5, 0.9, 1.0)
#: Probabilities are clipped to [EPS, 1 - EPS] before the logit (|logit| <= 13.8).
EPS = 1e-6
#: Logit features are divided by this (roughly unit scale for the networks).
LOGIT_SCALE = 4.0
#: Counts of units are divided by this.
COUNT_SCALE = 5.0
#: A missing unit's confidence feature (weaker than any real one after scaling).
NO_UNIT = -4.0
#: Every feature lies in [-FEATURE_BOUND, FEATURE_BOUND] (unit counts are cut there).
FEATURE_BOUND = 100.0


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


def feature_names(classes: Sequence[str]) -> list[str]:
    """Names of the :func:`clip_features` columns, in order (C classes: ``2 C + 9`` columns)."""
    return (
        [f"class={c}" for c in classes]
        + [f"score_q{q:g}" for q in QUANTILES]
        + [f"unit{k + 1}" for k in range(TOP_UNITS)]
        + ["units", "units_above"]
        + [f"max[{c}]" for c in classes]
        + ["clip_median"]
    )


def clip_features(scores: Sequence[ClassScores], grid: ResidualGrid, frame_hop_s: float) -> F32:
    """What the agent sees of every (clip, class): array (n_clips, C, ``2 C + 9``), float32.

    With t the logit of the class's table threshold (alternative 0 of ``grid``), logits of
    probabilities clipped to [EPS, 1 - EPS], ``L`` = LOGIT_SCALE and ``K`` = COUNT_SCALE, the
    columns (:func:`feature_names`) are:

    - the class, one-hot (C): the networks are shared by the classes;
    - the class's frame scores: quantiles QUANTILES over the clip's frames, ``(logit - t) / L``;
    - the table's decoding units on this clip (``boxes``: the boxes of its box setting with
      their confidences; ``frames``: the runs of its median-filtered curve above the lowest
      threshold an offset reaches, each with its peak): the TOP_UNITS strongest confidences,
      ``(logit - t) / L`` (NO_UNIT where there are fewer), the number of units and the number
      above the threshold, ``/ K`` (change points found, events kept; cut at FEATURE_BOUND);
    - every class's peak score on the clip, ``logit / L`` (C, class order): how confident the
      other classes are;
    - the median over the clip's frames of every class, ``logit / L``: the clip's overall level.

    Args:
        scores: Every class's scores, in the grid's class order (same clips).
        grid: The residual grid (its table defines t and the decoding units).
        frame_hop_s: Seconds per frame.

    Raises:
        ValueError: If the number of classes differs from the grid's.
    """
    if len(scores) != grid.n_classes:
        raise ValueError(f"the grid has {grid.n_classes} classes, but got scores of {len(scores)}")
    n_cls, n = len(scores), len(scores[0].offsets) - 1
    n_q = len(QUANTILES)
    shared = np.concatenate(
        [np.stack([_logit(_clip_quantiles(cs, (1.0,))[:, 0]) for cs in scores], axis=1),
         _logit(_clip_median(scores))[:, None]], axis=1) / LOGIT_SCALE
    out = np.zeros((n, n_cls, 2 * n_cls + 9), np.float32)
    for j, (cs, base) in enumerate(zip(scores, grid.table, strict=True)):
        t = float(_logit(base.threshold))
        clip, conf = _units(cs, base, grid.lowest_threshold(j), frame_hop_s)
        unit_cols = [
            (_logit(_clip_quantiles(cs, QUANTILES)) - t) / LOGIT_SCALE,
            _top(clip, (_logit(conf) - t) / LOGIT_SCALE, n, TOP_UNITS),
            np.bincount(clip, minlength=n)[:, None] / COUNT_SCALE,
            np.bincount(clip[conf > base.threshold], minlength=n)[:, None] / COUNT_SCALE,
        ]
        out[:, j, j] = 1.0
        out[:, j, n_cls : n_cls + n_q + TOP_UNITS + 2] = np.concatenate(unit_cols, axis=1)
        out[:, j, n_cls + n_q + TOP_UNITS + 2 :] = shared
    return np.clip(out, -FEATURE_BOUND, FEATURE_BOUND)


def _logit(p: npt.ArrayLike) -> F64:
    q = np.clip(np.asarray(p, np.float64), EPS, 1.0 - EPS)
    return np.asarray(np.log(q / (1.0 - q)), np.float64)


def _clip_ids(offsets: I64) -> I64:
    return np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))


def _clip_quantiles(cs: ClassScores, qs: Sequence[float]) -> F64:
    """Per clip, lower quantiles of its frames (index floor(q (len - 1)) of the sorted frames)."""
    n = len(cs.offsets) - 1
    lengths = np.diff(cs.offsets)
    v = cs.values.astype(np.float64)
    ordered = v[np.lexsort((v, _clip_ids(cs.offsets)))]
    out = np.zeros((n, len(qs)), np.float64)
    full = lengths > 0
    for k, q in enumerate(qs):
        idx = cs.offsets[:-1] + np.floor(q * np.maximum(lengths - 1, 0)).astype(np.int64)
        out[full, k] = ordered[idx[full]]
    return out


def _clip_median(scores: Sequence[ClassScores]) -> F64:
    """Per clip, the median (lower) of its frames of every class."""
    n = len(scores[0].offsets) - 1
    values = np.concatenate([cs.values for cs in scores]).astype(np.float64)
    clip = np.concatenate([_clip_ids(cs.offsets) for cs in scores])
    order = np.lexsort((values, clip))
    counts = np.bincount(clip, minlength=n)
    starts = np.cumsum(counts) - counts
    out = np.zeros(n, np.float64)
    full = counts > 0
    out[full] = values[order][starts[full] + (counts[full] - 1) // 2]
    return out


def _units(cs: ClassScores, base: ClassParams, low: float, frame_hop_s: float) -> tuple[I64, F64]:
    """(clip, confidence) of the table setting's decoding units (see :func:`clip_features`)."""
    if base.decoder == "boxes":
        boxes = detect_boxes(cs.values, cs.offsets, frame_hop_s, base.box_setting)
        return boxes.clip, boxes.confidence
    filtered = median_filter_values(cs.values, cs.offsets, base.median_filter_frames).astype(np.float64)
    start, end = runs(filtered > np.float64(low), cs.offsets)
    if len(start) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    padded = np.concatenate((filtered, [0.0]))
    idx = np.empty(2 * len(start), np.int64)
    idx[0::2], idx[1::2] = start, end
    peak = np.maximum.reduceat(padded, idx)[0::2]
    clip = np.searchsorted(cs.offsets, start, side="right") - 1
    return clip.astype(np.int64), np.asarray(peak, np.float64)


def _top(clip: I64, value: F64, n: int, k: int) -> F64:
    """Per clip, its ``k`` largest values in descending order (NO_UNIT where fewer)."""
    out = np.full((n, k), NO_UNIT, np.float64)
    if len(clip) == 0:
        return out
    order = np.lexsort((-value, clip))
    c, v = clip[order], value[order]
    counts = np.bincount(c, minlength=n)
    rank = np.arange(len(c)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = rank < k
    out[c[keep], rank[keep]] = v[keep]
    return out
