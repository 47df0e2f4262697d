"""The post-processing stack as a Gymnasium environment (the RL strategy's world).

The formulation follows Giannakopoulos et al. (IEEE Access 10, 2022): the state is one clip's
class probability matrix, the action picks every stack parameter of every class from a grid,
the reward is event-based macro F1. Their episode gives the whole reward at the last step
with discount 0.99, so early clips get almost no credit; :class:`PostProcessingEnv` pays the
*marginal* macro F1 of every clip instead, so that with discount 1 the return is exactly the
episode's macro F1 and each clip's action is credited with its own effect.

Pure domain code: no Ray here. The RL strategy (``service.strategies.rl``) builds one
environment per replica with :meth:`PostProcessingEnv.from_shards`, each replica reading its
own shards (:func:`replica_shards`), so scores never travel through the driver.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from envs.errors import SedtuneInputError
from envs.evaluator import EvalSet, Evaluator, MetricConfig, align
from envs.groundtruth import read_durations, read_ground_truth
from envs.metrics.fscore import macro_f_of_totals
from envs.params import BoxSetting, ClassParams, class_params_from_json
from envs.scoreset import ClassScores, ScoreSet
from envs.snap import box_settings, nearest_box
from envs.space import SearchSpace, Setting

LOG = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ActionGrid:
    """The discrete per-class parameter grid behind the action space.

    The action is one integer per (parameter, class), laid out parameter block by parameter
    block: ``[decoding index] * C + [threshold index] * C``, followed by ``[gap index] * C``
    and ``[min-duration index] * C`` only when the space offers more than one value for
    those stages (with one value they are fixed and take no action dimension).

    A *decoding* is everything a setting fixes before the clean-up: a ``frames`` kernel or a
    box setting (box kernel, step filter, merge criterion, confidence). The decoding index
    runs over the ``frames`` kernels first, then the box settings, so the full setting index
    ``(decoding * gaps + gap) * min_durations + min_duration`` (:meth:`split`) is the index
    into ``space.settings``. A ``frames``-only grid is the grid of before: its decoding
    index is the kernel index, and its first block is named ``median_filter_frames``.

    Attributes:
        n_classes: Number of classes C.
        kernels: Median-filter kernels (frames) of the ``frames`` decoder; empty when the
            space does not search it.
        thresholds: Decision thresholds (frame thresholds or box-confidence thresholds).
        fill_gap_s: Gap-filling values (seconds).
        min_duration_s: Minimum-duration values (seconds).
        boxes: Box settings of the ``boxes`` decoder, in ``space.settings`` order; empty when
            the space does not search it.
    """

    n_classes: int
    kernels: tuple[int, ...]
    thresholds: tuple[float, ...]
    fill_gap_s: tuple[float, ...] = (0.0,)
    min_duration_s: tuple[float, ...] = (0.0,)
    boxes: tuple[BoxSetting, ...] = ()

    def __post_init__(self) -> None:
        if not self.kernels and not self.boxes:
            raise ValueError("an action grid needs frames kernels or box settings, but got neither")

    @staticmethod
    def from_space(space: SearchSpace, n_classes: int) -> ActionGrid:
        """The grid of a search space (thresholds from ``space.threshold_grid()``)."""
        if n_classes < 1:
            raise SedtuneInputError(f"an action grid needs at least one class, but got {n_classes=}")
        return ActionGrid(
            n_classes,
            tuple(int(k) for k in space.kernels) if "frames" in space.decoders else (),
            tuple(float(t) for t in space.threshold_grid()),
            tuple(float(g) for g in space.fill_gap_s),
            tuple(float(d) for d in space.min_duration_s),
            tuple(box_settings(space)),
        )

    @property
    def n_decodings(self) -> int:
        """Choices of the first block: ``frames`` kernels plus box settings."""
        return len(self.kernels) + len(self.boxes)

    @property
    def blocks(self) -> list[tuple[str, int]]:
        """(parameter name, number of values) of every action block, in layout order."""
        first = "decoding" if self.boxes else "median_filter_frames"
        out = [(first, self.n_decodings), ("threshold", len(self.thresholds))]
        if len(self.fill_gap_s) > 1:
            out.append(("fill_gap_s", len(self.fill_gap_s)))
        if len(self.min_duration_s) > 1:
            out.append(("min_duration_s", len(self.min_duration_s)))
        return out

    @property
    def nvec(self) -> I64:
        """Number of choices of every action dimension (MultiDiscrete ``nvec``)."""
        return np.repeat(np.array([n for _, n in self.blocks], np.int64), self.n_classes)

    @functools.cached_property
    def _settings(self) -> tuple[Setting, ...]:
        clean_up = list(itertools.product(self.fill_gap_s, self.min_duration_s))
        frames = [Setting(k, g, d) for k in self.kernels for g, d in clean_up]
        boxes = [
            Setting(b.median_filter_frames, g, d, "boxes", b.step_filter_s, b.merge_abs, b.merge_rel,
                    b.confidence)
            for b in self.boxes
            for g, d in clean_up
        ]
        return tuple(frames + boxes)

    def settings(self) -> list[Setting]:
        """The setting of every setting index, as ``SearchSpace.settings`` (frames, then boxes)."""
        return list(self._settings)

    def split(self, action: npt.ArrayLike) -> tuple[I64, I64]:
        """Setting index and threshold index of every class.

        Args:
            action: One action (``len(nvec)`` integers) or a batch (n, ``len(nvec)``).

        Returns:
            Two integer arrays of shape (C,) or (n, C).

        Raises:
            ValueError: If the action does not lie in the action space.
        """
        a = np.asarray(action)
        nvec = self.nvec
        if a.shape[-1:] != nvec.shape or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"an action must be {len(nvec)} integers, but got shape {a.shape} ({a.dtype})")
        a = a.astype(np.int64)
        if (a < 0).any() or (a >= nvec).any():
            raise ValueError(f"every action entry must lie in [0, nvec), but got {a.tolist()} ({nvec=})")
        c = self.n_classes
        blocks = [n for n, _ in self.blocks]
        by = {n: a[..., i * c : (i + 1) * c] for i, n in enumerate(blocks)}
        zero = np.zeros_like(by["threshold"])
        gap = by.get("fill_gap_s", zero)
        dur = by.get("min_duration_s", zero)
        setting = (by[blocks[0]] * len(self.fill_gap_s) + gap) * len(self.min_duration_s) + dur
        return setting, by["threshold"]

    def class_params(self, setting: int, threshold: int) -> ClassParams:
        """The parameters of a (setting index, threshold index) pair."""
        return self._settings[setting].with_threshold(self.thresholds[threshold])

    def _nearest_decoding(self, p: ClassParams) -> int:
        """Index of the decoding nearest to ``p`` (its own decoder's if the grid has it)."""
        if self.kernels and (p.decoder == "frames" or not self.boxes):
            return int(np.argmin(np.abs(np.asarray(self.kernels, np.float64) - p.median_filter_frames)))
        return len(self.kernels) + nearest_box(p, self.boxes)

    def nearest_action(self, params: Sequence[ClassParams]) -> I64:
        """The action closest to per-class parameters: per block, the nearest grid value.

        The decoding block keeps a class's decoder when the grid has it, else takes the
        other decoder's nearest decoding (:mod:`envs.snap`).

        Args:
            params: One :class:`ClassParams` per class, in class order.

        Returns:
            ``len(nvec)`` integers (hysteresis ``threshold_off`` is ignored).

        Raises:
            ValueError: If ``params`` does not have one entry per class.
        """
        if len(params) != self.n_classes:
            raise ValueError(f"need {self.n_classes} class parameters, but got {len(params)}")
        values = {"threshold": self.thresholds, "fill_gap_s": self.fill_gap_s,
                  "min_duration_s": self.min_duration_s}
        out = [self._nearest_decoding(p) for p in params]
        for name, _ in self.blocks[1:]:
            grid = np.asarray(values[name], np.float64)
            out += [int(np.argmin(np.abs(grid - float(getattr(p, name))))) for p in params]
        return np.asarray(out, np.int64)

    def params(self, action: npt.ArrayLike, classes: Sequence[str]) -> dict[str, ClassParams]:
        """Per class, the parameters one action picks."""
        setting, thr = self.split(action)
        return {c: self.class_params(int(setting[i]), int(thr[i])) for i, c in enumerate(classes)}

    def to_json(self) -> dict[str, Any]:
        """The grid as a JSON-ready dict (without ``n_classes``); :meth:`from_json` inverts it."""
        return {
            "kernels": list(self.kernels),
            "thresholds": list(self.thresholds),
            "fill_gap_s": list(self.fill_gap_s),
            "min_duration_s": list(self.min_duration_s),
            "boxes": [
                {"median_filter_frames": b.median_filter_frames, "step_filter_s": b.step_filter_s,
                 "merge_abs": b.merge_abs, "merge_rel": b.merge_rel, "confidence": b.confidence}
                for b in self.boxes
            ],
        }

    @staticmethod
    def from_json(obj: Mapping[str, Any], n_classes: int, where: str = "grid") -> ActionGrid:
        """The grid of :meth:`to_json` (``boxes`` absent: a ``frames``-only grid).

        Raises:
            SedtuneInputError: A box setting that breaks a parameter rule.
        """
        boxes = tuple(
            class_params_from_json({**b, "decoder": "boxes", "threshold": 0.5}, f"{where}, boxes[{i}]")
            .box_setting
            for i, b in enumerate(obj.get("boxes", []))
        )
        return ActionGrid(
            n_classes,
            tuple(int(k) for k in obj["kernels"]),
            tuple(float(t) for t in obj["thresholds"]),
            tuple(float(g) for g in obj["fill_gap_s"]),
            tuple(float(d) for d in obj["min_duration_s"]),
            boxes,
        )


def _class_arrays(data: EvalSet) -> list[ClassScores]:
    return [data.scores(c) for c in data.classes]


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


def count_table(evaluator: Evaluator, grid: ActionGrid) -> I32:
    """Per clip, class, setting and threshold of the grid, the event counts of that clip.

    Matching never crosses clips, so a clip's counts do not depend on the other clips and a
    step of the environment is a lookup. Every entry is the evaluator's own count
    (:meth:`Evaluator.class_counts_by_group` with one group per clip), for either decoder:
    the evaluator caches the filtered scores per (class, kernel) and the boxes per (class,
    box setting), so the table costs one decode per (class, setting, threshold). (The box
    sweep, :func:`envs.sweep.sweep_boxes` with one group per clip, would count every
    threshold at once, but holds clips x distinct box confidences counters per array, which
    grows with the square of a replica's clips.)

    Args:
        evaluator: Evaluator on the environment's clips.
        grid: The action grid.

    Returns:
        Array (n_clips, C, n_settings, n_thresholds, 3) of [nref, nsys, ntp], int32.
    """
    data = evaluator.data
    n = len(data)
    groups = np.arange(n, dtype=np.int64)
    settings = grid.settings()
    table = np.zeros((n, len(data.classes), len(settings), len(grid.thresholds), 3), np.int32)
    for ci, label in enumerate(data.classes):
        for si, setting in enumerate(settings):
            for ti, th in enumerate(grid.thresholds):
                params = setting.with_threshold(th)
                table[:, ci, si, ti] = evaluator.class_counts_by_group(label, params, groups, n)
    return table


def running_macro_f(counts: npt.NDArray[np.integer[Any]]) -> float:
    """Macro F of accumulated per-class counts (C, 3), sed_eval semantics, NaN read as 0."""
    f = macro_f_of_totals(counts)
    return 0.0 if math.isnan(f) else f


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
    if shard_paths is not None:
        bad = [i for i in shard_indices if not 0 <= i < len(shard_paths)]
        if bad:
            raise SedtuneInputError(f"{data.scores}: no shard {bad[0]} (the set has {len(shard_paths)})")
        scores = ScoreSet.open(data.scores, [shard_paths[i] for i in shard_indices])
    else:
        full = ScoreSet.open(data.scores)
        bad = [i for i in shard_indices if not 0 <= i < len(full.shards)]
        if bad:
            raise SedtuneInputError(f"{data.scores}: no shard {bad[0]} (the set has {len(full.shards)})")
        scores = full.subset(list(shard_indices))
    truth = read_ground_truth(data.ground_truth)
    durations = read_durations(data.durations) if data.durations else None
    index = truth.index()
    names = scores.filenames
    unknown = [n for n in names if n not in index]
    if unknown:
        raise SedtuneInputError(
            f"{data.scores} vs {data.ground_truth}: clip {unknown[0]!r} has scores but is not in the "
            f"ground truth ({len(unknown)} such clip(s))"
        )
    # The ground truth of the chosen shards only, in their order, so that alignment holds.
    aligned = align(
        scores,
        truth.subset(np.array([index[n] for n in names], np.int64)),
        durations,
        f"{data.scores} (shards {list(shard_indices)}) vs {data.ground_truth}",
    )
    wanted = None if data.clips is None else set(data.clips)
    keep = np.array([i for i, n in enumerate(names) if wanted is None or n in wanted], np.int64)
    if len(keep) == 0:
        raise SedtuneInputError(f"{data.scores}: shards {list(shard_indices)} hold none of the clips in play")
    if data.classes is not None:
        aligned = aligned.restricted(data.classes)
    return aligned if len(keep) == len(names) else aligned.subset(keep)


class PostProcessingEnv(gym.Env[F32, npt.NDArray[np.integer[Any]]]):
    """Choose every class's post-processing parameters, one clip at a time.

    **Episode.** A pass over ``episode_clips`` clips drawn without replacement from the
    environment's clips (all of them, shuffled, if it holds fewer), in an order fixed by the
    seed of :meth:`reset`. Each step is one clip.

    **Observation.** ``Box(0, 1, (n_frames_max, C), float32)``: the current clip's class
    probability matrix (frames x classes, class order of the data), zero-padded or cut to
    ``n_frames_max`` frames (cutting affects only what the agent sees; the stack always runs
    on the whole clip). After the last step the last clip's matrix is returned again.

    **Action.** ``MultiDiscrete(grid.nvec)``: for every class a decoding index (a
    ``frames`` kernel of ``space.kernels``, then the ``boxes`` settings; with ``frames``
    only, the kernel index) and a threshold index into ``space.threshold_grid()``, laid out
    ``[decoding] * C + [threshold] * C`` (plus ``[gap] * C`` and ``[min duration] * C`` when
    the space has more than one value for them; see :class:`ActionGrid`). Together they
    index ``space.settings``. The action applies to the current clip only.

    **Reward.** The increase of the episode's running event-based macro F1 when this clip's
    events are added: with ``N_ref, N_sys, N_tp`` of every class summed over the episode's
    clips so far (sed_eval semantics, per-clip matching), ``F_t`` the macro F of those
    totals (class F with ``zero_score``; classes without reference events so far drop out,
    so a false alarm before a class's first reference event is charged when that event
    arrives; a NaN macro counts as 0) and ``F_0 = 0``, the reward of step t is
    ``F_t - F_{t-1}``.
    With discount 1 the return telescopes to the episode's macro F1 exactly, and each
    clip's action is credited with its own marginal effect. (The paper's code paid
    ``n_clips * F`` at the last step only, discounted by 0.99 per step, so early clips got
    almost no credit.) Rewards lie in [-1, 1].

    **Episode end.** ``terminated`` is True after the last clip of the episode; the
    environment never truncates.

    **Info.** ``clip``: the clip's name; ``class_counts``: array (C, 3) of this step's
    ``[nref, nsys, ntp]`` per class (order ``classes``); ``episode_macro_f``: ``F_t``.

    **Arguments.**

    Args:
        data: The clips, their scores and reference events (nothing else is read).
        space: Search space; the action grid is its settings and ``threshold_grid()``.
        metric: Collars (default DCASE: 0.2 s, 20 % of length).
        episode_clips: Clips per episode (>= 1).
        n_frames_max: Observation frames (default: the longest clip of ``data``). Replicas
            that share a policy must use the same value.

    Every step is a table lookup: at construction the counts of every clip under every
    (class, setting, threshold) of the grid are computed once (:func:`count_table`,
    ``n_clips * C * settings * thresholds * 3`` int32 values).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        data: EvalSet,
        space: SearchSpace,
        metric: MetricConfig | None = None,
        *,
        episode_clips: int = 32,
        n_frames_max: int | None = None,
    ) -> None:
        if len(data) == 0:
            raise SedtuneInputError("the environment needs at least one clip, but got none")
        if episode_clips < 1:
            raise SedtuneInputError(f"episode_clips must be >= 1, but got {episode_clips=}")
        self.data = data
        self.classes = list(data.classes)
        self.grid = ActionGrid.from_space(space, len(self.classes))
        self._scores = _class_arrays(data)
        longest = int(max(np.diff(cs.offsets).max() for cs in self._scores))
        self.n_frames_max = longest if n_frames_max is None else int(n_frames_max)
        if self.n_frames_max < 1:
            raise SedtuneInputError(f"n_frames_max must be >= 1, but got {n_frames_max=}")
        self.episode_clips = min(int(episode_clips), len(data))
        self.observation_space = gym.spaces.Box(
            0.0, 1.0, (self.n_frames_max, len(self.classes)), np.float32
        )
        self.action_space = gym.spaces.MultiDiscrete(self.grid.nvec)
        self.table = count_table(Evaluator(data, metric), self.grid)
        LOG.debug("post-processing env: %d clips, %d classes, count table %.1f MB",
                  len(data), len(self.classes), self.table.nbytes / 1e6)
        self._order: I64 = np.zeros(0, np.int64)
        self._t = 0
        self._acc = np.zeros((len(self.classes), 3), np.int64)
        self._f = 0.0
        self._class_idx = np.arange(len(self.classes))

    @classmethod
    def from_shards(
        cls,
        data: DataRefLike,
        shard_indices: Sequence[int],
        space: SearchSpace,
        metric: MetricConfig | None = None,
        *,
        shard_paths: Sequence[str] | None = None,
        episode_clips: int = 32,
        n_frames_max: int | None = None,
    ) -> PostProcessingEnv:
        """An environment on some shards of a set (see :func:`load_shards`)."""
        evalset = load_shards(data, shard_indices, shard_paths)
        return cls(evalset, space, metric, episode_clips=episode_clips, n_frames_max=n_frames_max)

    @property
    def clip_order(self) -> I64:
        """Clip indices of the current episode, in order."""
        return self._order.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Start an episode: draw its clips (seeded) and show the first one."""
        super().reset(seed=seed)
        self._order = self.np_random.choice(len(self.data), size=self.episode_clips, replace=False)
        self._t = 0
        self._acc[:] = 0
        self._f = 0.0
        return self._obs(), {"clip": self.data.filenames[int(self._order[0])], "episode_macro_f": 0.0}

    def step(
        self, action: npt.NDArray[np.integer[Any]]
    ) -> tuple[F32, SupportsFloat, bool, bool, dict[str, Any]]:
        """Apply the action to the current clip; reward the change of the running macro F."""
        if self._t >= len(self._order):
            raise RuntimeError("step() called on a finished episode; call reset() first")
        setting, thr = self.grid.split(action)
        clip = int(self._order[self._t])
        counts = self.table[clip, self._class_idx, setting, thr].astype(np.int64)
        self._acc += counts
        f = running_macro_f(self._acc)
        reward = f - self._f
        self._f = f
        self._t += 1
        done = self._t == len(self._order)
        info = {"clip": self.data.filenames[clip], "class_counts": counts, "episode_macro_f": f}
        return self._obs(), reward, done, False, info

    def _obs(self) -> F32:
        clip = int(self._order[min(self._t, len(self._order) - 1)])
        return observation(self._scores, clip, self.n_frames_max)
