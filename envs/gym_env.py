"""The post-processing stack as a Gymnasium environment (the RL strategy's world).

The formulation starts from Giannakopoulos et al. (IEEE Access 10, 2022): the state is a
clip's class probabilities, the action picks stack parameters, the reward is event-based F1.
Their agent picked every parameter of every class from the whole grid and was paid the macro
F1 once per pass (discount 0.99 per clip), so it had to rediscover the static optimum, which
an exact sweep finds in seconds, and gave early clips almost no credit. Here:

- **residual actions**: the agent changes a static table (the exact sweep's robust
  recommendation, or the manual setting) per clip; :class:`envs.action_grid.ResidualGrid`.
  A policy that always takes the base action is the table, so training can only add what
  adapts to the clip;
- **one decision per (clip, class)**, each paid its own class's F: macro F is the mean of the
  class F's and each class's F depends only on its own parameters, so per-class rewards are
  exact credit (one agent per class; they share the networks and see the class one-hot);
- **reward relative to the table**: the change of the class's F if this clip alone took the
  action instead of the table's (:func:`residual_rewards`). Decisions do not interact to
  first order, so every step is its own episode's worth of credit (discount 0).

Pure domain code: no Ray here. The RL strategy (``service.strategies.rl``) builds one
environment per replica with :meth:`ResidualEnv.from_shards`, each replica reading its own
shards (:func:`envs.gym_data.replica_shards`), so scores never travel through the driver.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from envs.action_grid import ResidualGrid
from envs.errors import SedtuneInputError
from envs.evalset import EvalSet
from envs.evaluator import Evaluator, MetricConfig
from envs.events import ClassEvents
from envs.gym_data import FEATURE_BOUND, DataRefLike, clip_features, load_shards
from envs.metrics.fscore import f_measure

LOG = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def count_table(evaluator: Evaluator, grid: ResidualGrid) -> I32:
    """Per clip, class and action of the grid, that clip's event counts.

    Matching never crosses clips, so a clip's counts do not depend on the other clips and a
    step of the environment is a lookup. Every entry is the evaluator's own count
    (:meth:`Evaluator.class_counts_by_group` with one group per clip), for either decoder; the
    evaluator caches filtered scores and boxes, so the table costs one decode per (class,
    action).

    Returns:
        Array (n_clips, C, n_actions, 3) of [nref, nsys, ntp], int32.
    """
    data = evaluator.data
    n = len(data)
    groups = np.arange(n, dtype=np.int64)
    table = np.zeros((n, grid.n_classes, grid.n_actions, 3), np.int32)
    for ci, label in enumerate(data.classes):
        for a, params in enumerate(grid.class_actions(ci)):
            table[:, ci, a] = evaluator.class_counts_by_group(label, params, groups, n)
    return table


def live_decisions(evaluator: Evaluator, grid: ResidualGrid) -> npt.NDArray[np.bool_]:
    """Per clip and class, whether some action changes the clip's events of that class.

    Decided from the scores alone (the decoded events, never the reference): a (clip, class)
    on which every action gives the table's events cannot matter, whatever the policy does.

    Returns:
        Array (n_clips, C) of bool.
    """
    data = evaluator.data
    n = len(data)
    live = np.zeros((n, grid.n_classes), bool)
    for ci, label in enumerate(data.classes):
        base = evaluator.events(label, grid.params(ci, grid.base_action))
        for a, params in enumerate(grid.class_actions(ci)):
            if a != grid.base_action:
                live[:, ci] |= _changed_clips(base, evaluator.events(label, params), n)
    return live


def _changed_clips(a: ClassEvents, b: ClassEvents, n: int) -> npt.NDArray[np.bool_]:
    """Per clip, whether its events differ between ``a`` and ``b`` (both sorted by clip, onset)."""
    na, nb = np.bincount(a.clip, minlength=n), np.bincount(b.clip, minlength=n)
    changed = np.asarray(na != nb, bool)
    # Clips with as many events on both sides: their rows line up in order.
    ra, rb = ~changed[a.clip], ~changed[b.clip]
    differ = (a.onset_s[ra] != b.onset_s[rb]) | (a.offset_s[ra] != b.offset_s[rb])
    changed[a.clip[ra][differ]] = True
    return changed


def class_f(counts: npt.NDArray[np.integer[Any]]) -> F64:
    """F of counts [..., 3] (sed_eval semantics; NaN, a class without reference events, as 0)."""
    return np.nan_to_num(f_measure(counts[..., 0], counts[..., 1], counts[..., 2]), nan=0.0)


def residual_rewards(counts: npt.NDArray[np.integer[Any]], base_action: int) -> F32:
    """The reward of every (clip, class, action): ``n * (F_c(T_c - n_base + n_a) - F_c(T_c))``.

    ``T_c`` are the class's counts of the table (base action) summed over the n clips,
    ``n_base`` and ``n_a`` the clip's counts under the base action and under action a. A
    policy's change of the class's F is, to first order, the mean of its rewards over the
    clips; the base action's reward is exactly 0.

    Args:
        counts: :func:`count_table`'s array (n_clips, C, n_actions, 3).
        base_action: The grid's base action.

    Returns:
        Array (n_clips, C, n_actions).
    """
    c = counts.astype(np.int64)
    base = c[:, :, base_action : base_action + 1]
    totals = base.sum(axis=0)  # (C, 1, 3)
    moved = class_f(totals[None] - base + c)
    return np.asarray(len(c) * (moved - class_f(totals)[None]), np.float32)


@dataclass(frozen=True)
class ResidualTables:
    """What an environment looks up: features, counts and rewards of every (clip, class)."""

    features: F32  # (n_clips, C, n_features)
    counts: I32  # (n_clips, C, n_actions, 3)
    rewards: F32  # (n_clips, C, n_actions)
    live: npt.NDArray[np.bool_]  # (n_clips, C)

    @staticmethod
    def build(data: EvalSet, grid: ResidualGrid, metric: MetricConfig | None = None) -> ResidualTables:
        """The tables of a set under a grid (class order of ``data``)."""
        evaluator = Evaluator(data, metric)
        counts = count_table(evaluator, grid)
        features = clip_features([data.scores(c) for c in data.classes], grid, data.frame_hop_s)
        return ResidualTables(features, counts, residual_rewards(counts, grid.base_action),
                              live_decisions(evaluator, grid))


class ResidualEnv(gym.Env[F32, np.int64]):
    """Change one class's static-table entry for one clip; be paid the change of its F.

    **Decisions.** A (clip, class) pair is *live* when some action changes the clip's events
    of that class (:func:`live_decisions`, from the scores alone); the others cannot matter
    and are never shown (on the DESED sets over 90 % of the pairs). With no live pair at all,
    every pair is shown.

    **Episode.** ``episode_clips * C`` live pairs drawn without replacement (all of them, if
    fewer), in an order fixed by the seed of :meth:`reset`; one step each.

    **Networks and routes.** For cross-fitting the policy has ``n_nets`` networks; clip i is
    *held out* from network ``holdout[i]`` (its decisions are scored with that network, which
    never trains on it). At reset every step of the episode gets a *route*, a network other
    than its clip's held-out one (uniformly; with one network, network 0), and trains that
    network only.

    **Observation.** ``Box(-FEATURE_BOUND, FEATURE_BOUND, (n_nets + F,), float32)``: the route
    one-hot, then the (clip, class) features of :func:`envs.gym_data.clip_features`. After the
    last step the last observation is returned again.

    **Action.** ``Discrete(grid.n_actions)``: an alternative and a threshold offset for the
    current (clip, class) (:class:`envs.action_grid.ResidualGrid`).

    **Reward.** :func:`residual_rewards`: the change of the class's F over the environment's
    clips if this clip alone took the action instead of the table's, times the number of
    clips; 0 for the base action. A policy's mean reward over the (clip, class) pairs is, to
    first order, its macro-F gain over the table.

    **Episode end.** ``terminated`` after the last step; the environment never truncates.

    **Info.** ``clip`` (name), ``class`` (label), ``route``, ``counts`` (the step's [nref,
    nsys, ntp]).

    Args:
        data: The clips, their scores and reference events.
        grid: The residual grid (class order of ``data``).
        metric: Collars (default DCASE: 0.2 s, 20 % of length).
        holdout: Per clip, the network it is held out from (default: all 0).
        n_nets: Networks of the policy (>= 1).
        episode_clips: Clips' worth of decisions per episode (>= 1).
        tables: Precomputed :class:`ResidualTables` of ``data`` (default: built here).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        data: EvalSet,
        grid: ResidualGrid,
        metric: MetricConfig | None = None,
        *,
        holdout: Sequence[int] | I64 | None = None,
        n_nets: int = 1,
        episode_clips: int = 32,
        tables: ResidualTables | None = None,
    ) -> None:
        if len(data) == 0:
            raise SedtuneInputError("the environment needs at least one clip, but got none")
        if episode_clips < 1 or n_nets < 1:
            raise SedtuneInputError(
                f"`episode_clips >= 1 and n_nets >= 1` must hold, but got {episode_clips=}, {n_nets=}"
            )
        if grid.n_classes != len(data.classes):
            raise SedtuneInputError(f"the grid has {grid.n_classes} classes, the data {len(data.classes)}")
        self.data, self.grid, self.n_nets = data, grid, int(n_nets)
        self.classes = list(data.classes)
        self.holdout = np.zeros(len(data), np.int64) if holdout is None else np.asarray(holdout, np.int64)
        if self.holdout.shape != (len(data),) or ((self.holdout < 0) | (self.holdout >= n_nets)).any():
            raise SedtuneInputError(
                f"holdout must give each of the {len(data)} clips a network in [0, {n_nets})"
            )
        self.tables = tables if tables is not None else ResidualTables.build(data, grid, metric)
        live = self.tables.live if self.tables.live.any() else np.ones_like(self.tables.live)
        #: The (clip, class index) pairs shown, (P, 2).
        self.pairs: I64 = np.argwhere(live).astype(np.int64)
        n_features = self.tables.features.shape[-1]
        self.observation_space = gym.spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, (self.n_nets + n_features,),
                                                np.float32)
        self.action_space = gym.spaces.Discrete(grid.n_actions)
        self.episode_steps = min(int(episode_clips) * len(self.classes), len(self.pairs))
        self._order: I64 = np.zeros(0, np.int64)
        self._route: I64 = np.zeros(0, np.int64)
        self._t = 0

    @classmethod
    def from_shards(
        cls,
        data: DataRefLike,
        shard_indices: Sequence[int],
        grid: ResidualGrid,
        metric: MetricConfig | None = None,
        *,
        shard_paths: Sequence[str] | None = None,
        holdout: Mapping[str, int] | None = None,
        n_nets: int = 1,
        episode_clips: int = 32,
    ) -> ResidualEnv:
        """An environment on some shards of a set (see :func:`envs.gym_data.load_shards`).

        The replicas of one process that read the same shards share one set of tables.

        Args:
            holdout: Network each clip is held out from, by clip name (default: 0).
        """
        key = (data.scores, data.ground_truth, data.durations, data.clips, data.classes)
        evalset, tables = _shard_tables(key, tuple(shard_indices), grid, metric,
                                        None if shard_paths is None else tuple(shard_paths))
        ids = None if holdout is None else [int(holdout[n]) for n in evalset.filenames]
        return cls(evalset, grid, metric, holdout=ids, n_nets=n_nets, episode_clips=episode_clips,
                   tables=tables)

    @property
    def episode_pairs(self) -> I64:
        """(clip, class index) of the current episode's steps, in order, (steps, 2)."""
        return self.pairs[self._order].copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Start an episode: draw its decisions and their routes (seeded), show the first one."""
        super().reset(seed=seed)
        rng = self.np_random
        self._order = rng.choice(len(self.pairs), size=self.episode_steps, replace=False).astype(np.int64)
        held = self.holdout[self.pairs[self._order, 0]]
        if self.n_nets == 1:
            self._route = np.zeros(len(held), np.int64)
        else:
            # A uniform network other than the held-out one.
            self._route = (held + 1 + rng.integers(0, self.n_nets - 1, size=len(held))) % self.n_nets
        self._t = 0
        clip, ci = self._current()
        return self._obs(), {"clip": self.data.filenames[clip], "class": self.classes[ci]}

    def step(self, action: np.int64 | int) -> tuple[F32, SupportsFloat, bool, bool, dict[str, Any]]:
        """Apply the action to the current (clip, class); reward its change of the class's F."""
        if self._t >= len(self._order):
            raise RuntimeError("step() called on a finished episode; call reset() first")
        a = int(action)
        if not 0 <= a < self.grid.n_actions:
            raise ValueError(f"an action must lie in [0, {self.grid.n_actions}), but got {action}")
        clip, ci = self._current()
        route, counts = int(self._route[self._t]), self.tables.counts[clip, ci, a].astype(np.int64)
        info = {"clip": self.data.filenames[clip], "class": self.classes[ci], "route": route,
                "counts": counts}
        reward = float(self.tables.rewards[clip, ci, a])
        self._t += 1
        return self._obs(), reward, self._t == len(self._order), False, info

    def _current(self) -> tuple[int, int]:
        clip, ci = self.pairs[self._order[min(self._t, len(self._order) - 1)]]
        return int(clip), int(ci)

    def _obs(self) -> F32:
        clip, ci = self._current()
        out = np.zeros(self.n_nets + self.tables.features.shape[-1], np.float32)
        out[int(self._route[min(self._t, len(self._order) - 1)])] = 1.0
        out[self.n_nets :] = self.tables.features[clip, ci]
        return out


class _Ref(NamedTuple):
    """A :class:`envs.gym_data.DataRefLike` from its fields (hashable, for the cache key)."""

    scores: str
    ground_truth: str
    durations: str | None
    clips: tuple[str, ...] | None
    classes: tuple[str, ...] | None


@functools.lru_cache(maxsize=2)
def _shard_tables(
    key: tuple[str, str, str | None, tuple[str, ...] | None, tuple[str, ...] | None],
    shards: tuple[int, ...],
    grid: ResidualGrid,
    metric: MetricConfig | None,
    shard_paths: tuple[str, ...] | None,
) -> tuple[EvalSet, ResidualTables]:
    """The shards' clips and their tables, once per process and (data, shards, grid, metric)."""
    evalset = load_shards(_Ref(*key), shards, shard_paths)
    tables = ResidualTables.build(evalset, grid, metric)
    LOG.info("residual env tables: %d clips, %d classes, %d actions", len(evalset), grid.n_classes,
             grid.n_actions)
    return evalset, tables
