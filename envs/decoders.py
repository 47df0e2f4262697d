"""Inference: a parameter file plus scores gives events, with either decoder, without Ray.

This is the documented Python API for taking a tuned parameter file into inference::

    from envs.decoders import clip_events, score_set_events
    from envs.params import load_params

    params = load_params("best_params.json")
    # one clip: a (frames x classes) array of probabilities, classes in the array's order
    rows = clip_events(probs, ["Dog", "Cat"], params, frame_hop_s=0.064, duration_s=10.0)
    # -> [(onset_s, offset_s, label), ...] sorted by onset
    # a whole score set (Parquet shards): per class, its events (clip indices into filenames)
    events, filenames = score_set_events("scores/", params)

Each class is decoded by its own decoder (``frames``: :mod:`envs.stack`; ``boxes``:
:mod:`envs.boxes`), exactly as the evaluator scores it (tested equal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from envs.boxes import box_events, detect_boxes
from envs.errors import SedtuneInputError
from envs.events import ClassEvents
from envs.params import ClassParams, ParamFile, check_hop
from envs.scoreset import ClassScores, ScoreSet
from envs.stack import apply_stack

F64 = npt.NDArray[np.float64]


def class_events(
    scores: ClassScores, params: ClassParams, frame_hop_s: float, durations_s: F64 | None = None
) -> ClassEvents:
    """One class's events over many clips under its parameters (either decoder).

    Args:
        scores: The class's scores for all clips.
        params: The class's parameters.
        frame_hop_s: Seconds per frame.
        durations_s: Per clip duration in seconds (NaN where unknown), or None.
    """
    if params.decoder == "boxes":
        boxes = detect_boxes(scores.values, scores.offsets, frame_hop_s, params.box_setting)
        return box_events(
            boxes, params.threshold, frame_hop_s, durations_s, params.fill_gap_s, params.min_duration_s
        )
    return apply_stack(scores, params, frame_hop_s, durations_s)


def clip_events(
    probs: npt.ArrayLike,
    classes: Sequence[str],
    params: ParamFile,
    frame_hop_s: float,
    duration_s: float | None = None,
) -> list[tuple[float, float, str]]:
    """The events of one clip.

    Args:
        probs: Frame probabilities, shape (frames, classes), values in [0, 1].
        classes: Class label of every column of ``probs``; each must have parameters.
        params: The parameter file.
        frame_hop_s: Seconds per frame of ``probs`` (must equal the file's hop).
        duration_s: The clip's duration in seconds (offsets are clipped to it), or None.

    Returns:
        ``(onset_s, offset_s, label)`` tuples sorted by onset, then label.

    Raises:
        SedtuneInputError: Shape, values, hop or classes that do not fit.
    """
    a = np.asarray(probs, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] != len(classes):
        raise SedtuneInputError(
            f"probs: must have shape (frames, {len(classes)}) for classes {list(classes)}, but got {a.shape}"
        )
    if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
        raise SedtuneInputError("probs: values must be finite probabilities in [0, 1]")
    check_hop(params, frame_hop_s, "frame_hop_s")
    offsets = np.array([0, a.shape[0]], np.int64)
    dur = None if duration_s is None else np.array([float(duration_s)])
    out: list[tuple[float, float, str]] = []
    for j, label in enumerate(classes):
        if label not in params.classes:
            raise SedtuneInputError(f"classes[{j}]: no parameters for class {label!r}")
        ev = class_events(ClassScores(label, np.ascontiguousarray(a[:, j]), offsets), params.classes[label],
                          frame_hop_s, dur)
        out += [(float(x), float(y), label) for x, y in zip(ev.onset_s, ev.offset_s, strict=True)]
    out.sort(key=lambda r: (r[0], r[2], r[1]))
    return out


def score_set_events(
    scores: str | ScoreSet, params: ParamFile, durations: Mapping[str, float] | None = None
) -> tuple[dict[str, ClassEvents], list[str]]:
    """Per class, the events of every clip of a score set (clip indices into the filenames).

    Args:
        scores: A score-set directory or URI, or an opened :class:`ScoreSet`.
        params: Parameters covering exactly the set's classes, at the set's hop.
        durations: Optional clip durations (seconds) for clipping offsets.

    Returns:
        (events per class, the set's clip filenames).
    """
    s = ScoreSet.open(scores) if isinstance(scores, str) else scores
    where = scores if isinstance(scores, str) else "scores"
    params.check_classes(s.classes, where)
    check_hop(params, s.frame_hop_s, where)
    names = list(s.filenames)
    dur = np.array([durations.get(n, np.nan) for n in names]) if durations else None
    return {c: class_events(s.read_class(c), params.classes[c], s.frame_hop_s, dur) for c in s.classes}, names
