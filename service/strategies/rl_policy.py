"""The clip-adaptive policy of the rl strategy, in plain torch (no Ray needed).

:class:`AdaptivePolicy` is what ``sedtune apply --policy`` loads: the policy network
(:class:`PolicyNet` over :class:`ClipFeatures`, per class quantiles and mean of a clip's
frames) and the action grid; for every clip it picks each class's setting (a ``frames``
kernel or a box setting, gap, minimum duration) and threshold, and decodes with them
(:func:`envs.decoders.class_events`, either decoder). Saved as ``policy.pt`` (weights) +
``policy.json`` (description, format :data:`POLICY_FORMAT`: the grid of
:meth:`envs.action_grid.ActionGrid.to_json`, whose ``boxes`` list holds the box settings;
descriptions of format ``sedtune.rl_policy/1``, ``frames`` grids without that list, still
load). :class:`ValueNet` is the PPO critic, needed in training only.
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

from envs.action_grid import ActionGrid
from envs.decoders import class_events
from envs.evalset import EvalSet
from envs.events import ClassEvents
from envs.gym_data import observations
from envs.scoreset import ClassScores

I64 = npt.NDArray[np.int64]

POLICY_FORMAT = "sedtune.rl_policy/2"
#: Descriptions :meth:`AdaptivePolicy.load` reads: /1 has no ``boxes`` (a ``frames`` grid).
POLICY_FORMATS = ("sedtune.rl_policy/1", POLICY_FORMAT)
#: Clips per forward pass when a policy acts on a whole set.
INFERENCE_CHUNK = 1024


def _mlp(n_in: int, hidden: Sequence[int], n_out: int, out_std: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        lin = nn.Linear(n_in, h)
        nn.init.orthogonal_(lin.weight, math.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
        n_in = h
    out = nn.Linear(n_in, n_out)
    # A small last layer starts the policy near uniform (cleanrl's ppo.py does the same).
    nn.init.orthogonal_(out.weight, out_std)
    nn.init.zeros_(out.bias)
    layers.append(out)
    return nn.Sequential(*layers)


class ClipFeatures(nn.Module):
    """A compact view of the observation: per class, quantiles and mean of the frames.

    Quantiles of a class's probabilities say how much of the clip lies above any
    threshold, which is what the threshold choice depends on; they do not depend on where
    in the clip the frames are.

    Args:
        quantiles: Number of evenly spaced quantiles (including min and max).
    """

    def __init__(self, quantiles: int) -> None:
        super().__init__()
        self.quantiles = quantiles

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, frames, C) -> (B, C * (quantiles + 1))."""
        n_frames = obs.shape[1]
        pos = torch.linspace(0, n_frames - 1, self.quantiles, device=obs.device).round().long()
        q = torch.sort(obs, dim=1).values[:, pos, :]
        feats = torch.cat([q, obs.mean(dim=1, keepdim=True)], dim=1)
        return feats.transpose(1, 2).reshape(obs.shape[0], -1)

    def size(self, n_classes: int) -> int:
        """Feature count for C classes."""
        return n_classes * (self.quantiles + 1)


class PolicyNet(nn.Module):
    """Observation -> logits of every action dimension (concatenated), plain torch.

    Args:
        n_classes: Classes C (columns of the observation).
        nvec: Choices per action dimension.
        hidden: Hidden layer sizes.
        quantiles: Quantiles per class in the features.
    """

    def __init__(self, n_classes: int, nvec: Sequence[int], hidden: Sequence[int], quantiles: int) -> None:
        super().__init__()
        self.nvec = [int(n) for n in nvec]
        self.features = ClipFeatures(quantiles)
        self.mlp = _mlp(self.features.size(n_classes), hidden, sum(self.nvec), 0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, frames, C) -> (B, sum(nvec)) logits."""
        return self.mlp(self.features(obs))  # type: ignore[no-any-return]

    @torch.no_grad()
    def favour(self, action: Sequence[int], logit: float) -> None:
        """Add ``logit`` to the output bias of ``action``'s choice in every dimension.

        The last layer starts with small weights and zero bias, so afterwards the greedy
        action is ``action`` on every observation while sampling stays broad (a logit of 1
        over 18 choices gives the favoured one 14 % instead of 6 %).
        """
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        bias = last.bias
        start = 0
        for n, a in zip(self.nvec, action, strict=True):
            bias[start + int(a)] += logit
            start += n

    @torch.no_grad()
    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """Argmax action of every dimension, (B, len(nvec)) int64."""
        parts = torch.split(self.forward(obs), self.nvec, dim=-1)
        return torch.stack([p.argmax(dim=-1) for p in parts], dim=-1)


class ValueNet(nn.Module):
    """Observation -> value estimate (the PPO critic; not needed for inference)."""

    def __init__(self, n_classes: int, hidden: Sequence[int], quantiles: int) -> None:
        super().__init__()
        self.features = ClipFeatures(quantiles)
        self.mlp = _mlp(self.features.size(n_classes), hidden, 1, 1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, frames, C) -> (B,)."""
        return self.mlp(self.features(obs)).squeeze(-1)  # type: ignore[no-any-return]


@dataclass
class AdaptivePolicy:
    """The clip-adaptive read-out: the policy picks every class's parameters per clip.

    Attributes:
        net: The policy network.
        grid: The action grid (settings of either decoder, thresholds, ...).
        classes: Class order of observations and actions.
        n_frames_max: Observation frames.
        hidden: Hidden sizes (to rebuild the network).
        quantiles: Feature quantiles (to rebuild the network).
        frame_hop_s: Frame hop (seconds) of the scores it was trained on, once known; the
            kernels are in frames, so scores with another hop are refused.
    """

    net: PolicyNet
    grid: ActionGrid
    classes: list[str]
    n_frames_max: int
    hidden: tuple[int, ...]
    quantiles: int
    frame_hop_s: float | None = None

    @staticmethod
    def create(
        grid: ActionGrid, classes: Sequence[str], n_frames_max: int, hidden: Sequence[int], quantiles: int
    ) -> AdaptivePolicy:
        """A policy with fresh weights."""
        net = PolicyNet(len(classes), grid.nvec.tolist(), hidden, quantiles)
        return AdaptivePolicy(net, grid, list(classes), n_frames_max, tuple(hidden), quantiles)

    def load_rllib_state(self, state: Mapping[str, Any]) -> None:
        """Take the policy weights from an RLlib module state (keys ``pi.*``)."""
        sd = {k[3:]: torch.as_tensor(np.asarray(v)) for k, v in state.items() if k.startswith("pi.")}
        self.net.load_state_dict(sd)

    def actions(self, scores: Sequence[ClassScores]) -> I64:
        """Greedy action of every clip, (n_clips, len(nvec)), computed chunk by chunk.

        Args:
            scores: Every class's scores in :attr:`classes` order.
        """
        n = len(scores[0].offsets) - 1
        out = [np.zeros((0, len(self.grid.nvec)), np.int64)]
        self.net.eval()
        for lo in range(0, n, INFERENCE_CHUNK):
            # Observations of one chunk at a time: a whole set's would be clips x frames x C.
            idx = np.arange(lo, min(n, lo + INFERENCE_CHUNK), dtype=np.int64)
            obs = observations([cs.take(idx) for cs in scores], self.n_frames_max)
            out.append(self.net.greedy(torch.from_numpy(obs)).numpy().astype(np.int64))
        return np.concatenate(out)

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
        durations_s: npt.NDArray[np.float64] | None,
    ) -> dict[str, ClassEvents]:
        """Per class, events of clips given as class scores (e.g. ``ScoreSet.read_class``).

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
        setting, thr = self.grid.split(self.actions(ordered))
        return {
            c: _per_clip_events(ordered[j], setting[:, j], thr[:, j], self.grid, frame_hop_s, durations_s)
            for j, c in enumerate(self.classes)
        }

    def save(self, path: str, frame_hop_s: float) -> None:
        """Write the weights to ``path`` (``.pt``) and the description beside it (``.json``)."""
        self.frame_hop_s = frame_hop_s
        torch.save(self.net.state_dict(), path)
        meta = {
            "format": POLICY_FORMAT,
            "frame_hop_s": frame_hop_s,
            "classes": self.classes,
            "n_frames_max": self.n_frames_max,
            **self.grid.to_json(),
            "hidden": list(self.hidden),
            "quantiles": self.quantiles,
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
        if meta.get("format") not in POLICY_FORMATS:
            raise ValueError(
                f"{_meta_path(path)}: format must be one of {list(POLICY_FORMATS)}, "
                f"but got {meta.get('format')!r}"
            )
        grid = ActionGrid.from_json(meta, len(meta["classes"]), _meta_path(path))
        policy = AdaptivePolicy.create(grid, meta["classes"], int(meta["n_frames_max"]), meta["hidden"],
                                       int(meta["quantiles"]))
        policy.net.load_state_dict(torch.load(path, weights_only=True))
        policy.frame_hop_s = float(meta["frame_hop_s"])
        return policy


def _meta_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def _per_clip_events(
    scores: ClassScores,
    setting: I64,
    thr: I64,
    grid: ActionGrid,
    frame_hop_s: float,
    durations_s: npt.NDArray[np.float64] | None,
) -> ClassEvents:
    """One class's events when clip i uses (setting[i], thr[i]): one stack run per distinct pair."""
    parts: list[ClassEvents] = []
    pairs = np.stack([setting, thr], axis=1)
    for s, t in np.unique(pairs, axis=0):
        clips = np.flatnonzero((setting == s) & (thr == t)).astype(np.int64)
        dur = None if durations_s is None else durations_s[clips]
        ev = class_events(scores.take(clips), grid.class_params(int(s), int(t)), frame_hop_s, dur)
        parts.append(ClassEvents(clips[ev.clip], ev.onset_s, ev.offset_s))
    if not parts:
        return ClassEvents.empty()
    clip = np.concatenate([p.clip for p in parts])
    on = np.concatenate([p.onset_s for p in parts])
    off = np.concatenate([p.offset_s for p in parts])
    order = np.lexsort((off, on, clip))
    return ClassEvents(clip[order], on[order], off[order])
