"""The per-class search space of the stack.

Every class gets the same space: a set of median-filter kernels (frames), a threshold range,
and sets of gap-filling and minimum-duration values (seconds). The discrete stages form the
*settings* (kernel, gap, min duration); the threshold is continuous. Strategies with discrete
actions (the RL agent) use ``threshold_grid``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from envs.errors import SedtuneInputError
from envs.params import MAX_KERNEL_FRAMES, ClassParams


@dataclass(frozen=True)
class Setting:
    """The discrete part of one class's parameters."""

    median_filter_frames: int
    fill_gap_s: float
    min_duration_s: float

    def with_threshold(self, threshold: float) -> ClassParams:
        """Full parameters at a threshold."""
        return ClassParams(
            median_filter_frames=self.median_filter_frames,
            threshold=float(threshold),
            fill_gap_s=self.fill_gap_s,
            min_duration_s=self.min_duration_s,
        )


@dataclass(frozen=True)
class SearchSpace:
    """Per-class parameter space.

    Attributes:
        kernels: Median-filter kernels in frames (odd, >= 1).
        threshold_low: Lowest threshold searched (> 0).
        threshold_high: Highest threshold searched (< 1).
        fill_gap_s: Gap-filling values (seconds, >= 0).
        min_duration_s: Minimum-duration values (seconds, >= 0).
        threshold_step: Grid step for strategies with discrete thresholds.
    """

    kernels: tuple[int, ...] = tuple(range(1, 22, 2))
    threshold_low: float = 0.01
    threshold_high: float = 0.99
    fill_gap_s: tuple[float, ...] = (0.0,)
    min_duration_s: tuple[float, ...] = (0.0,)
    threshold_step: float = 0.05
    _settings: tuple[Setting, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        settings = tuple(
            Setting(k, float(g), float(d))
            for k, g, d in itertools.product(self.kernels, self.fill_gap_s, self.min_duration_s)
        )
        object.__setattr__(self, "_settings", settings)

    def validate(self, where: str = "space") -> SearchSpace:
        """Check every rule; return self.

        Raises:
            SedtuneInputError: Naming the field (``space.kernels`` …) and the bad value.
        """
        if not self.kernels:
            raise SedtuneInputError(f"{where}.kernels: must not be empty")
        for i, k in enumerate(self.kernels):
            if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0 or k > MAX_KERNEL_FRAMES:
                raise SedtuneInputError(
                    f"{where}.kernels[{i}]: must be an odd integer in [1, {MAX_KERNEL_FRAMES}], but got {k!r}"
                )
        if len(set(self.kernels)) != len(self.kernels):
            raise SedtuneInputError(f"{where}.kernels: values must be unique, got {list(self.kernels)}")
        if not 0 < self.threshold_low < self.threshold_high < 1:
            raise SedtuneInputError(
                f"{where}.threshold: `0 < low < high < 1` must hold, but got "
                f"(low={self.threshold_low}, high={self.threshold_high})"
            )
        for name in ("fill_gap_s", "min_duration_s"):
            vals = getattr(self, name)
            if not vals:
                raise SedtuneInputError(f"{where}.{name}: must not be empty")
            for i, v in enumerate(vals):
                if not v >= 0:
                    raise SedtuneInputError(f"{where}.{name}[{i}]: must be >= 0, but got {v!r}")
        if not 0 < self.threshold_step < self.threshold_high - self.threshold_low:
            raise SedtuneInputError(
                f"{where}.threshold_step: must be in (0, high - low), but got {self.threshold_step!r}"
            )
        return self

    @property
    def settings(self) -> tuple[Setting, ...]:
        """Every combination of the discrete stages."""
        return self._settings

    def threshold_grid(self) -> list[float]:
        """Thresholds from low to high (inclusive where it lands) in ``threshold_step`` steps."""
        n = int(np.floor((self.threshold_high - self.threshold_low) / self.threshold_step + 1e-9)) + 1
        return [round(self.threshold_low + i * self.threshold_step, 10) for i in range(n)]

    def contains(self, p: ClassParams) -> bool:
        """Whether a parameter set lies in the space."""
        return (
            p.median_filter_frames in self.kernels
            and self.threshold_low <= p.threshold <= self.threshold_high
            and p.fill_gap_s in self.fill_gap_s
            and p.min_duration_s in self.min_duration_s
            and p.threshold_off is None
        )


def kernels_for_seconds(seconds: float, frame_hop_s: float, allowed: Sequence[int] | None = None) -> int:
    """The odd kernel (frames) closest to a filter length in seconds, e.g. 0.45 s at 0.064 s -> 7."""
    k = max(1, round(seconds / frame_hop_s))
    if k % 2 == 0:
        k += 1
    if allowed:
        k = min(allowed, key=lambda a: (abs(a - k), a))
    return k
