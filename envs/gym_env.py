"""The post-processing stack as a Gymnasium environment (the RL strategy's world).

The formulation follows Giannakopoulos et al. (IEEE Access 10, 2022): the state is one clip's
class probability matrix, the action picks every stack parameter of every class from a grid,
the reward is event-based macro F1. Their episode gives the whole reward at the last step
with discount 0.99, so early clips get almost no credit; :class:`PostProcessingEnv` pays the
*marginal* macro F1 of every clip instead, so that with discount 1 the return is exactly the
episode's macro F1 and each clip's action is credited with its own effect.

Pure domain code: no Ray here. The RL strategy (``service.strategies.rl``) builds one
environment per replica with :meth:`PostProcessingEnv.from_shards`, each replica reading its
own shards (:func:`envs.gym_data.replica_shards`), so scores never travel through the driver.
The action grid is :class:`envs.action_grid.ActionGrid`; what a replica reads and shows is
:mod:`envs.gym_data`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from envs.action_grid import ActionGrid
from envs.errors import SedtuneInputError
from envs.evalset import EvalSet
from envs.evaluator import Evaluator, MetricConfig
from envs.gym_data import DataRefLike, load_shards, observation
from envs.metrics.fscore import macro_f_of_totals
from envs.scoreset import ClassScores
from envs.space import SearchSpace

LOG = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]


def _class_arrays(data: EvalSet) -> list[ClassScores]:
    return [data.scores(c) for c in data.classes]


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
        """An environment on some shards of a set (see :func:`envs.gym_data.load_shards`)."""
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
