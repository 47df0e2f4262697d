"""The discrete per-class parameter grid behind the RL action space.

An action of :class:`envs.gym_env.PostProcessingEnv` is one integer per (parameter, class);
:class:`ActionGrid` lays the blocks out, maps an action to every class's parameters and
back (nearest action), and round-trips through JSON for the policy artifact.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from envs.errors import SedtuneInputError
from envs.params import BoxSetting, ClassParams, class_params_from_json
from envs.snap import box_settings, nearest_box
from envs.space import SearchSpace, Setting

I64 = npt.NDArray[np.int64]


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
