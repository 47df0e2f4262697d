"""The clip-adaptive policy of the rl strategy, in plain torch (no Ray needed).

:class:`AdaptivePolicy` is what ``sedtune apply --policy`` loads. For every (clip, class) it
sees the clip's features (:func:`envs.gym_data.clip_features`) and picks an action of the
residual grid (:class:`envs.action_grid.ResidualGrid`): keep the class's static-table entry,
move its threshold by some logit steps, or take one of the class's alternative settings.

It holds ``n_nets`` policy networks trained by cross-fitting (clip i never trains network
``holdout[i]``, which scores it in the gate: :meth:`AdaptivePolicy.crossfit_actions`); applied
to new clips it takes the mean of their logits. Classes whose adaptation did not beat the
table in that cross-validation (``adapt`` False) always take the base action, the table.

Every network starts as the table: its last layer is zero and the base action's bias is
``prior_logit``, so the untrained policy takes the base action on every clip, and sampling
still tries the others. Saved as ``policy.pt`` (weights) + ``policy.json`` (description,
format :data:`POLICY_FORMAT`). :class:`ValueNet` is the PPO critic, needed in training only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from envs.action_grid import ResidualGrid
from envs.decoders import class_events
from envs.evalset import EvalSet
from envs.events import ClassEvents
from envs.gym_data import clip_features, feature_names
from envs.scoreset import ClassScores

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

POLICY_FORMAT = "sedtune.rl_policy/3"
#: Clips per forward pass when a policy acts on a whole set.
INFERENCE_CHUNK = 4096


def _mlp(n_in: int, hidden: Sequence[int], n_out: int, out_std: float) -> nn.Sequential:
    """Tanh MLP (no hidden layer: linear); orthogonal init, last layer scaled by ``out_std``."""
    layers: list[nn.Module] = []
    for h in hidden:
        lin = nn.Linear(n_in, h)
        nn.init.orthogonal_(lin.weight, math.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
        n_in = h
    out = nn.Linear(n_in, n_out)
    if out_std > 0:
        nn.init.orthogonal_(out.weight, out_std)
    else:
        nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    layers.append(out)
    return nn.Sequential(*layers)


class PolicyNet(nn.Module):
    """(Clip, class) features -> action logits; starts at the table (see the module docstring).

    Args:
        n_features: Feature columns.
        n_actions: Actions of the residual grid.
        hidden: Hidden layer sizes (empty: a linear policy).
        base_action: The grid's base action.
        prior_logit: The base action's initial bias (0: uniform).
    """

    def __init__(
        self, n_features: int, n_actions: int, hidden: Sequence[int], base_action: int, prior_logit: float
    ) -> None:
        super().__init__()
        self.mlp = _mlp(n_features, hidden, n_actions, 0.0)
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.bias[base_action] = prior_logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_features) -> (B, n_actions)."""
        return self.mlp(x)  # type: ignore[no-any-return]


class ValueNet(nn.Module):
    """(Clip, class) features -> expected reward (the PPO critic; not needed for inference)."""

    def __init__(self, n_features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.mlp = _mlp(n_features, hidden, 1, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_features) -> (B,)."""
        return self.mlp(x).squeeze(-1)  # type: ignore[no-any-return]


class RoutedNets(nn.Module):
    """Networks of which each sample uses one: the one its route one-hot names.

    The observation is ``[route one-hot (len(nets)), features]``; a network's output is masked
    out for the samples not routed to it, so no gradient reaches it from them.
    """

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, n_nets + n_features) -> the routed network's output, (B, ...)."""
        k = len(self.nets)
        route, x = obs[:, :k], obs[:, k:]
        outs = torch.stack([net(x) for net in self.nets], dim=1)  # (B, k, ...)
        weights = route.reshape(route.shape + (1,) * (outs.dim() - 2))
        return (outs * weights).sum(dim=1)


@dataclass
class AdaptivePolicy:
    """The clip-adaptive read-out (see the module docstring).

    Attributes:
        nets: The policy networks (cross-fitted).
        grid: The residual grid (the static table and its alternatives and offsets).
        classes: Class order of features and actions.
        adapt: Per class, whether it adapts (False: always the table).
        hidden: Hidden sizes (to rebuild the networks).
        prior_logit: The base action's initial bias (to rebuild the networks).
        frame_hop_s: Frame hop (seconds) of the scores it was trained on, once known; kernels
            and step filters are in frames and seconds of that hop, so other hops are refused.
    """

    nets: list[PolicyNet]
    grid: ResidualGrid
    classes: list[str]
    adapt: list[bool]
    hidden: tuple[int, ...]
    prior_logit: float
    frame_hop_s: float | None = None

    @staticmethod
    def create(
        grid: ResidualGrid, classes: Sequence[str], n_nets: int, hidden: Sequence[int], prior_logit: float
    ) -> AdaptivePolicy:
        """An untrained policy: every class takes its table entry on every clip."""
        n_features = len(feature_names(classes))
        nets = [PolicyNet(n_features, grid.n_actions, hidden, grid.base_action, prior_logit)
                for _ in range(n_nets)]
        return AdaptivePolicy(nets, grid, list(classes), [True] * len(classes), tuple(hidden), prior_logit)

    def load_rllib_state(self, state: Mapping[str, Any]) -> None:
        """Take the policy weights from an RLlib module state (keys ``pi.nets.<k>.*``)."""
        for k, net in enumerate(self.nets):
            prefix = f"pi.nets.{k}."
            sd = {key[len(prefix) :]: torch.as_tensor(np.asarray(v)) for key, v in state.items()
                  if key.startswith(prefix)}
            net.load_state_dict(sd)

    def features(self, scores: Sequence[ClassScores], frame_hop_s: float) -> npt.NDArray[np.float32]:
        """:func:`envs.gym_data.clip_features` of clips given as every class's scores."""
        return clip_features(scores, self.grid, frame_hop_s)

    @torch.no_grad()
    def _logits(self, feats: npt.NDArray[np.float32], nets: Sequence[PolicyNet]) -> F64:
        x = torch.from_numpy(feats.reshape(-1, feats.shape[-1]))
        out = np.zeros((x.shape[0], self.grid.n_actions), np.float64)
        for net in nets:
            net.eval()
            for lo in range(0, x.shape[0], INFERENCE_CHUNK):
                out[lo : lo + INFERENCE_CHUNK] += net(x[lo : lo + INFERENCE_CHUNK]).double().numpy()
        return (out / len(nets)).reshape(feats.shape[0], feats.shape[1], -1)

    def actions(self, scores: Sequence[ClassScores], frame_hop_s: float) -> I64:
        """Every (clip, class)'s action, (n_clips, C): the mean of the networks' logits, argmax;
        the base action for classes that do not adapt.

        Args:
            scores: Every class's scores in :attr:`classes` order.
            frame_hop_s: Seconds per frame.
        """
        feats = self.features(scores, frame_hop_s)
        acts = np.asarray(self._logits(feats, self.nets).argmax(axis=-1), np.int64)
        acts[:, ~np.asarray(self.adapt, bool)] = self.grid.base_action
        return acts

    def crossfit_actions(self, scores: Sequence[ClassScores], frame_hop_s: float, holdout: I64) -> I64:
        """Every (clip, class)'s action by the network that never trained on the clip.

        Args:
            scores: Every class's scores in :attr:`classes` order.
            frame_hop_s: Seconds per frame.
            holdout: Per clip, its held-out network.
        """
        feats = self.features(scores, frame_hop_s)
        out = np.full(feats.shape[:2], self.grid.base_action, np.int64)
        for k, net in enumerate(self.nets):
            mine = np.flatnonzero(holdout == k)
            if len(mine):
                out[mine] = self._logits(feats[mine], [net]).argmax(axis=-1)
        return out

    def events(self, evalset: EvalSet) -> dict[str, ClassEvents]:
        """Per class, the events over ``evalset``'s clips, each clip with its own action.

        Raises:
            ValueError: If the set's classes differ from the policy's.
        """
        if list(evalset.classes) != self.classes:
            raise ValueError(
                f"the policy was trained on classes {self.classes}, but the set has {evalset.classes}"
            )
        scores = {c: evalset.scores(c) for c in self.classes}
        return self.events_from_scores(scores, evalset.frame_hop_s, evalset.durations_s)

    def events_from_scores(
        self,
        scores: Mapping[str, ClassScores],
        frame_hop_s: float,
        durations_s: F64 | None,
        actions: I64 | None = None,
    ) -> dict[str, ClassEvents]:
        """Per class, events of clips given as class scores (e.g. ``ScoreSet.read_class``).

        Args:
            scores: Every class's scores (same clips).
            frame_hop_s: Seconds per frame.
            durations_s: Per clip duration (NaN where unknown), or None.
            actions: The actions (n_clips, C) to decode with (default: :meth:`actions`).

        Raises:
            ValueError: If a class is missing or the hop differs from the training scores'.
        """
        if self.frame_hop_s is not None and not math.isclose(frame_hop_s, self.frame_hop_s, rel_tol=1e-9):
            raise ValueError(
                f"the policy's kernels are for frame_hop_s {self.frame_hop_s}, but got {frame_hop_s}"
            )
        missing = [c for c in self.classes if c not in scores]
        if missing:
            raise ValueError(f"no scores for class {missing[0]!r}; the policy needs {self.classes}")
        ordered = [scores[c] for c in self.classes]
        acts = self.actions(ordered, frame_hop_s) if actions is None else actions
        return {
            c: _per_clip_events(ordered[j], acts[:, j], self.grid, j, frame_hop_s, durations_s)
            for j, c in enumerate(self.classes)
        }

    def save(self, path: str, frame_hop_s: float) -> None:
        """Write the weights to ``path`` (``.pt``) and the description beside it (``.json``)."""
        self.frame_hop_s = frame_hop_s
        torch.save([net.state_dict() for net in self.nets], path)
        meta = {
            "format": POLICY_FORMAT,
            "frame_hop_s": frame_hop_s,
            "classes": self.classes,
            "adapt": self.adapt,
            "n_nets": len(self.nets),
            "hidden": list(self.hidden),
            "prior_logit": self.prior_logit,
            "features": feature_names(self.classes),
            "grid": self.grid.to_json(),
        }
        with open(_meta_path(path), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")

    @staticmethod
    def load(path: str) -> AdaptivePolicy:
        """Read a policy saved by :meth:`save` (no Ray needed).

        Raises:
            ValueError: If the description has another format or an invalid grid.
        """
        with open(_meta_path(path), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != POLICY_FORMAT:
            raise ValueError(
                f"{_meta_path(path)}: format must be {POLICY_FORMAT!r} (a policy of an earlier sedtune "
                f"chose from the whole grid; train it again), but got {meta.get('format')!r}"
            )
        grid = ResidualGrid.from_json(meta["grid"], f"{_meta_path(path)}: grid")
        if grid.n_classes != len(meta["classes"]):
            raise ValueError(f"{_meta_path(path)}: the grid has {grid.n_classes} classes, not "
                             f"{len(meta['classes'])}")
        policy = AdaptivePolicy.create(grid, meta["classes"], int(meta["n_nets"]), meta["hidden"],
                                       float(meta["prior_logit"]))
        for net, sd in zip(policy.nets, torch.load(path, weights_only=True), strict=True):
            net.load_state_dict(sd)
        policy.adapt = [bool(a) for a in meta["adapt"]]
        policy.frame_hop_s = float(meta["frame_hop_s"])
        return policy


def _meta_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def _per_clip_events(
    scores: ClassScores,
    actions: I64,
    grid: ResidualGrid,
    class_index: int,
    frame_hop_s: float,
    durations_s: F64 | None,
) -> ClassEvents:
    """One class's events when clip i takes ``actions[i]``: one decode per distinct action."""
    parts: list[ClassEvents] = []
    for a in np.unique(actions):
        clips = np.flatnonzero(actions == a).astype(np.int64)
        dur = None if durations_s is None else durations_s[clips]
        ev = class_events(scores.take(clips), grid.params(class_index, int(a)), frame_hop_s, dur)
        parts.append(ClassEvents(clips[ev.clip], ev.onset_s, ev.offset_s))
    if not parts:
        return ClassEvents.empty()
    clip = np.concatenate([p.clip for p in parts])
    on = np.concatenate([p.onset_s for p in parts])
    off = np.concatenate([p.offset_s for p in parts])
    order = np.lexsort((off, on, clip))
    return ClassEvents(clip[order], on[order], off[order])
