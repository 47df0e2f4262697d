"""The nearest parameters inside a search space (warm starts, grid actions).

Per-class parameters from outside the space (a previous night's parameter file, the manual
setting, another job's space) are moved to the nearest point of the space, field by field:

- the decoder stays if the space searches it, else it becomes the space's other decoder;
- numbers (kernels, step-filter lengths, gap and minimum duration) go to the nearest allowed
  value, the smaller on ties (less smoothing, less clean-up), as
  :func:`envs.space.kernels_for_seconds`; a field the source decoder does not have (a step
  filter when a ``frames`` class becomes ``boxes``) takes the smallest allowed value;
- a merge criterion goes to the allowed (abs, rel) pair of the same kind first (the same
  parts set, so a class that never merged, e.g. a ``frames`` class, goes to no merging when
  the space offers it), then the nearest values, then the first listed;
- the box confidence stays if allowed, else the first listed;
- the threshold is clipped to the range; hysteresis is dropped (no space has it).

For a full product of values (a :class:`envs.space.SearchSpace`), choosing field by field
equals choosing the candidate with the lexicographically smallest distance, which is what
:func:`nearest_box` does over any list of box settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from envs.params import BoxSetting, ClassParams
from envs.space import SearchSpace


def nearest(value: float, allowed: Sequence[float]) -> float:
    """The allowed value nearest to ``value`` (the smaller on ties)."""
    return min(allowed, key=lambda a: (abs(a - value), a))


def box_settings(space: SearchSpace) -> list[BoxSetting]:
    """The space's distinct box settings (gap and minimum duration aside), in ``space.settings`` order."""
    return list(dict.fromkeys(s.box_setting for s in space.settings if s.decoder == "boxes"))


def _merge_distance(p: ClassParams, b: BoxSetting) -> tuple[int, float]:
    kind = int((p.merge_abs is None) != (b.merge_abs is None))
    kind += int((p.merge_rel is None) != (b.merge_rel is None))
    dist = 0.0
    if p.merge_abs is not None and b.merge_abs is not None:
        dist += abs(p.merge_abs - b.merge_abs)
    if p.merge_rel is not None and b.merge_rel is not None:
        # Ratios compare on a log scale (1.5 is as far from 2 as 2 from 2.67).
        dist += abs(math.log(p.merge_rel) - math.log(b.merge_rel))
    return kind, dist


def nearest_box(p: ClassParams, options: Sequence[BoxSetting]) -> int:
    """Index of the box setting in ``options`` nearest to ``p`` (either decoder).

    Raises:
        ValueError: If ``options`` is empty.
    """
    if not options:
        raise ValueError("no box settings to choose from")
    step = p.step_filter_s

    def key(i: int) -> tuple[object, ...]:
        b = options[i]
        return (
            abs(b.median_filter_frames - p.median_filter_frames),
            b.median_filter_frames,
            0.0 if step is None else abs(b.step_filter_s - step),
            b.step_filter_s,
            _merge_distance(p, b),
            int(b.confidence != p.confidence),
            i,
        )

    return min(range(len(options)), key=key)


def snap_params(p: ClassParams, space: SearchSpace) -> ClassParams:
    """The nearest parameters inside ``space`` (see the module docstring)."""
    decoder = p.decoder if p.decoder in space.decoders else space.decoders[0]
    threshold = float(min(max(p.threshold, space.threshold_low), space.threshold_high))
    gap = float(nearest(p.fill_gap_s, space.fill_gap_s))
    dur = float(nearest(p.min_duration_s, space.min_duration_s))
    if decoder == "frames":
        return ClassParams(
            median_filter_frames=int(nearest(p.median_filter_frames, space.kernels)),
            threshold=threshold,
            fill_gap_s=gap,
            min_duration_s=dur,
        )
    options = box_settings(space)
    b = options[nearest_box(p, options)]
    return ClassParams(
        median_filter_frames=b.median_filter_frames,
        threshold=threshold,
        fill_gap_s=gap,
        min_duration_s=dur,
        decoder="boxes",
        step_filter_s=b.step_filter_s,
        merge_abs=b.merge_abs,
        merge_rel=b.merge_rel,
        confidence=b.confidence,
    )
