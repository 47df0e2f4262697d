"""The residual action grid of the RL agent: per class, a static table's entry and its neighbours.

The agent does not choose a class's parameters from the whole space: a static per-class table
(the exact sweep's robust recommendation, or the manual setting) is the starting point, and an
action of :class:`envs.gym_env.ResidualEnv` is a *change* of one class's entry for one clip:

- an *alternative*: one of the class's static settings, each with its own threshold;
  alternative 0 is the table's entry, the others are the class's next best settings of the
  sweep (:func:`alternatives`; another decoder, step filter, merge criterion, kernel, ...);
- an *offset* of the threshold, ``-max_offset..max_offset`` steps of ``offset_step_logit`` in
  logit space: ``θ' = sigmoid(logit(θ) + d * step)``, kept inside ``[threshold_low,
  threshold_high]``. Logit steps, because a clip whose scores are shifted by a calibration
  offset needs its threshold shifted by the same amount in logit space.

Action index ``a = m * (2 D + 1) + (d + D)`` for alternative m and offset d (D =
``max_offset``); the *base action* (m 0, d 0, index D) keeps the static table, so a policy
that always takes it is the table.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from envs.errors import SedtuneInputError
from envs.metrics.fscore import f_measure
from envs.params import ClassParams, class_params_from_json
from envs.selection import Candidate
from envs.space import Setting

I64 = npt.NDArray[np.int64]


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class ResidualGrid:
    """Per class, the alternatives (alternative 0: the static table) and the threshold offsets.

    Attributes:
        alternatives: Per class (in class order), its alternatives, the same number for every
            class; ``alternatives[c][0]`` is the static table's entry.
        offset_step_logit: Step of a threshold offset, logit units (> 0).
        max_offset: Offsets run over ``-max_offset..max_offset`` steps (>= 0).
        threshold_low: Lowest threshold an offset may reach (in (0, 1)).
        threshold_high: Highest threshold an offset may reach (in (threshold_low, 1)).

    Raises:
        SedtuneInputError: Classes with different numbers of alternatives, no alternative,
            or an offset rule broken.
    """

    alternatives: tuple[tuple[ClassParams, ...], ...]
    offset_step_logit: float = 0.5
    max_offset: int = 2
    threshold_low: float = 0.01
    threshold_high: float = 0.99

    def __post_init__(self) -> None:
        sizes = {len(a) for a in self.alternatives}
        if not self.alternatives or len(sizes) != 1 or 0 in sizes:
            raise SedtuneInputError(
                f"a residual grid needs the same number (>= 1) of alternatives for every class, but got "
                f"{[len(a) for a in self.alternatives]}"
            )
        if not (self.offset_step_logit > 0 and math.isfinite(self.offset_step_logit)) or self.max_offset < 0:
            raise SedtuneInputError(
                f"`offset_step_logit > 0 and max_offset >= 0` must hold, but got "
                f"({self.offset_step_logit=}, {self.max_offset=})"
            )
        if not 0 < self.threshold_low < self.threshold_high < 1:
            raise SedtuneInputError(
                f"`0 < threshold_low < threshold_high < 1` must hold, but got "
                f"({self.threshold_low=}, {self.threshold_high=})"
            )

    @property
    def n_classes(self) -> int:
        """Classes C."""
        return len(self.alternatives)

    @property
    def n_alternatives(self) -> int:
        """Alternatives per class M."""
        return len(self.alternatives[0])

    @property
    def n_offsets(self) -> int:
        """Threshold offsets per alternative, ``2 * max_offset + 1``."""
        return 2 * self.max_offset + 1

    @property
    def n_actions(self) -> int:
        """Actions per (clip, class): ``n_alternatives * n_offsets``."""
        return self.n_alternatives * self.n_offsets

    @property
    def base_action(self) -> int:
        """The action that keeps the static table (alternative 0, offset 0)."""
        return self.max_offset

    @property
    def table(self) -> tuple[ClassParams, ...]:
        """The static table: every class's alternative 0."""
        return tuple(a[0] for a in self.alternatives)

    def split(self, action: int) -> tuple[int, int]:
        """(alternative, offset in steps) of an action index.

        Raises:
            ValueError: If the index is not an action of the grid.
        """
        if not 0 <= int(action) < self.n_actions:
            raise ValueError(f"an action must lie in [0, {self.n_actions}), but got {action}")
        m, k = divmod(int(action), self.n_offsets)
        return m, k - self.max_offset

    def threshold(self, class_index: int, action: int) -> float:
        """The threshold an action gives a class (see the module docstring)."""
        m, d = self.split(action)
        theta = self.alternatives[class_index][m].threshold
        if d == 0:
            return theta
        moved = _sigmoid(_logit(theta) + d * self.offset_step_logit)
        return float(min(max(moved, self.threshold_low), self.threshold_high))

    def params(self, class_index: int, action: int) -> ClassParams:
        """A class's parameters under an action."""
        return self._actions[class_index][action]

    def class_actions(self, class_index: int) -> tuple[ClassParams, ...]:
        """A class's parameters under every action, in action order."""
        return self._actions[class_index]

    @functools.cached_property
    def _actions(self) -> tuple[tuple[ClassParams, ...], ...]:
        return tuple(
            tuple(_moved(alts[self.split(a)[0]], self.threshold(c, a)) for a in range(self.n_actions))
            for c, alts in enumerate(self.alternatives)
        )

    def lowest_threshold(self, class_index: int) -> float:
        """The lowest threshold the table's setting reaches (alternative 0, most negative offset)."""
        return self.threshold(class_index, 0)

    def to_json(self) -> dict[str, Any]:
        """The grid as a JSON-ready dict; :meth:`from_json` inverts it."""
        return {
            "alternatives": [[p.to_json() for p in alts] for alts in self.alternatives],
            "offset_step_logit": self.offset_step_logit,
            "max_offset": self.max_offset,
            "threshold_low": self.threshold_low,
            "threshold_high": self.threshold_high,
        }

    @staticmethod
    def from_json(obj: Mapping[str, Any], where: str = "grid") -> ResidualGrid:
        """The grid of :meth:`to_json`.

        Raises:
            SedtuneInputError: Parameters that break a rule, or a missing field.
        """
        try:
            alts = tuple(
                tuple(class_params_from_json(p, f"{where}.alternatives[{c}][{m}]") for m, p in enumerate(row))
                for c, row in enumerate(obj["alternatives"])
            )
            return ResidualGrid(alts, float(obj["offset_step_logit"]), int(obj["max_offset"]),
                                float(obj["threshold_low"]), float(obj["threshold_high"]))
        except (KeyError, TypeError) as e:
            raise SedtuneInputError(f"{where}: not a residual grid ({type(e).__name__}: {e})") from None


def _moved(p: ClassParams, threshold: float) -> ClassParams:
    """``p`` at another threshold (a hysteresis release stays at or below it)."""
    off = None if p.threshold_off is None else min(p.threshold_off, threshold)
    return replace(p, threshold=threshold, threshold_off=off)


def alternatives(candidates: Sequence[Candidate], table: ClassParams, n: int) -> tuple[ClassParams, ...]:
    """A class's alternatives: the table's entry, then the best of each other setting.

    Per setting (everything but the threshold, :class:`envs.space.Setting`) the candidate with
    the best tuning F (ties: the first); the settings other than the table's ranked by that F.
    With fewer settings than ``n`` the table's entry fills the rest (an alternative that
    changes nothing).

    Args:
        candidates: The class's evaluated candidates (per-fold counts).
        table: The class's static table entry (alternative 0).
        n: Alternatives wanted (>= 1).
    """
    best: dict[Setting, tuple[float, ClassParams]] = {}
    for cand in candidates:
        s = Setting.of(cand.params)
        tot = cand.counts.sum(axis=0)
        f = float(np.nan_to_num(f_measure(tot[0], tot[1], tot[2]), nan=-1.0))
        if s not in best or f > best[s][0]:
            best[s] = (f, cand.params)
    own = Setting.of(table)
    ranked = sorted((v for s, v in best.items() if s != own), key=lambda v: -v[0])
    out = [table] + [p for _, p in ranked[: n - 1]]
    return tuple(out + [table] * (n - len(out)))
