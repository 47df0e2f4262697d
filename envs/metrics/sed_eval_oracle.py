"""sed_eval 0.2.1 itself, wrapped: the slow reference evaluator and test oracle.

This module runs sed_eval exactly as DESIGN.md ("The metric") pins it, clip by clip over every
clip of the ground truth, and returns the same per-class counts and F-measures the vectorized
evaluator (``envs.metrics.event_based`` / ``envs.metrics.segment_based``) computes. It is
slow (about 0.7 s per evaluation of a 1168-clip set on a 2-core machine, most of it in
sed_eval's per-pair Python loops), so it serves as the oracle in the tests and as an opt-in
evaluator (``--evaluator sed_eval``); tuning uses the fast evaluator.

Facts about sed_eval 0.2.1 that shape this wrapper:

- ``EventBasedMetrics`` rejects ``t_collar <= 0`` and non-``float`` collars or
  percentages (``ValueError``); values are passed through ``float()`` here, so ``5`` works
  and ``0.0`` raises.
- ``SegmentBasedMetrics.__init__`` does not accept ``empty_system_output_handling`` (it calls
  the base constructor without it), so ``"zero_score"`` is set on the instance after
  construction; the base class's ``class_wise_f_measure`` honours it.
- Event labels that are not in ``classes`` are not passed to sed_eval: they would not change
  the event-based class-wise counts, and the segment-based roll would raise on them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.events import ClassEvents

MACRO_KEY = "__macro__"

EventDict = dict[str, Any]


@dataclass(frozen=True)
class ClassCounts:
    """One class's totals as sed_eval reports them.

    Attributes:
        nref: ``class_wise[label]['Nref']``.
        nsys: ``class_wise[label]['Nsys']``.
        ntp: ``class_wise[label]['Ntp']``.
    """

    nref: int
    nsys: int
    ntp: int


def _per_clip_event_lists(
    filenames: Sequence[str],
    classes: Sequence[str],
    events: Mapping[str, ClassEvents],
) -> list[list[EventDict]]:
    """Group all events of the given classes by clip, as sed_eval event dicts.

    Args:
        filenames: Clip names; event clip indices refer to this list.
        classes: Labels to include (others in ``events`` are ignored).
        events: Per label, that class's events.

    Returns:
        For every clip index, its events as ``{'filename', 'event_label', 'onset', 'offset'}``
        dicts (onset/offset are the float64 values as Python floats, unrounded).

    Raises:
        ValueError: If an event refers to a clip index outside ``filenames``.
    """
    n = len(filenames)
    clip_parts: list[np.ndarray] = []
    on_parts: list[np.ndarray] = []
    off_parts: list[np.ndarray] = []
    lab_parts: list[np.ndarray] = []
    for k, label in enumerate(classes):
        ev = events.get(label)
        if ev is None or len(ev) == 0:
            continue
        clip = np.asarray(ev.clip, dtype=np.int64)
        if int(clip.min()) < 0 or int(clip.max()) >= n:
            raise ValueError(f"class {label!r}: clip index out of range for {n} clips")
        clip_parts.append(clip)
        on_parts.append(np.asarray(ev.onset_s, dtype=np.float64))
        off_parts.append(np.asarray(ev.offset_s, dtype=np.float64))
        lab_parts.append(np.full(clip.shape[0], k, dtype=np.int64))
    per_clip: list[list[EventDict]] = [[] for _ in range(n)]
    if not clip_parts:
        return per_clip
    clip = np.concatenate(clip_parts)
    order = np.argsort(clip, kind="stable")
    clip_sorted = clip[order]
    clips_l: list[int] = clip_sorted.tolist()
    ons: list[float] = np.concatenate(on_parts)[order].tolist()
    offs: list[float] = np.concatenate(off_parts)[order].tolist()
    labs: list[int] = np.concatenate(lab_parts)[order].tolist()
    rows = [
        {"filename": filenames[c], "event_label": classes[k], "onset": a, "offset": b}
        for c, k, a, b in zip(clips_l, labs, ons, offs, strict=True)
    ]
    bounds: list[int] = np.searchsorted(clip_sorted, np.arange(n + 1), side="left").tolist()
    for i in range(n):
        lo, hi = bounds[i], bounds[i + 1]
        if hi > lo:
            per_clip[i] = rows[lo:hi]
    return per_clip


def _collect(metrics: Any, classes: Sequence[str]) -> tuple[dict[str, ClassCounts], dict[str, float]]:
    """Read per-class counts, class F-measures and the macro F from a sed_eval metrics object."""
    counts: dict[str, ClassCounts] = {}
    fs: dict[str, float] = {}
    with warnings.catch_warnings():
        # nanmean over all-NaN classes warns; the NaN result is what sed_eval returns.
        warnings.simplefilter("ignore", RuntimeWarning)
        for label in classes:
            cw = metrics.class_wise[label]
            counts[label] = ClassCounts(int(cw["Nref"]), int(cw["Nsys"]), int(cw["Ntp"]))
            fs[label] = float(metrics.class_wise_f_measure(label)["f_measure"])
        avg = metrics.results_class_wise_average_metrics()
    fs[MACRO_KEY] = float(avg["f_measure"].get("f_measure", math.nan))
    return counts, fs


def _check_classes(classes: Sequence[str]) -> list[str]:
    labels = list(classes)
    if not labels:
        raise ValueError("classes must not be empty")
    if MACRO_KEY in labels:
        raise ValueError(f"{MACRO_KEY!r} is reserved and cannot be a class label")
    if len(set(labels)) != len(labels):
        raise ValueError("classes contain duplicates")
    return labels


def sed_eval_event_counts(
    filenames: Sequence[str],
    classes: Sequence[str],
    reference: Mapping[str, ClassEvents],
    estimated: Mapping[str, ClassEvents],
    t_collar_s: float = 0.2,
    percentage_of_length: float = 0.2,
) -> tuple[dict[str, ClassCounts], dict[str, float]]:
    """Event-based counts and F-measures computed by sed_eval 0.2.1.

    Runs ``sed_eval.sound_event.EventBasedMetrics(event_label_list=classes, t_collar=...,
    percentage_of_length=..., evaluate_onset=True, evaluate_offset=True,
    event_matching_type='optimal', empty_system_output_handling='zero_score')`` and calls
    ``evaluate()`` once per clip of ``filenames`` (also for clips without reference and/or
    system events).

    Args:
        filenames: Every evaluated clip (the ground truth's clips); index = clip id.
        classes: The event label list.
        reference: Per class label, the reference events (clip indices into ``filenames``).
        estimated: Per class label, the system events.
        t_collar_s: Onset/offset collar in seconds (sed_eval requires > 0).
        percentage_of_length: Offset tolerance as a fraction of the reference length, [0, 1].

    Returns:
        Per-class counts (``Nref``, ``Nsys``, ``Ntp`` of ``metrics.class_wise[label]``) and
        per-class F-measures (``class_wise_f_measure(label)['f_measure']``, NaN for a class
        without reference events) plus key ``'__macro__'`` with the class-wise average
        F-measure (NaN if every class is NaN).

    Raises:
        ValueError: From sed_eval for a collar <= 0 or a percentage outside [0, 1]; for empty
            or duplicate classes; for clip indices outside ``filenames``.
    """
    import sed_eval

    labels = _check_classes(classes)
    metrics = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=labels,
        t_collar=float(t_collar_s),
        percentage_of_length=float(percentage_of_length),
        evaluate_onset=True,
        evaluate_offset=True,
        event_matching_type="optimal",
        empty_system_output_handling="zero_score",
    )
    ref = _per_clip_event_lists(filenames, labels, reference)
    est = _per_clip_event_lists(filenames, labels, estimated)
    for r, e in zip(ref, est, strict=True):
        metrics.evaluate(reference_event_list=r, estimated_event_list=e)
    return _collect(metrics, labels)


def sed_eval_segment_counts(
    filenames: Sequence[str],
    classes: Sequence[str],
    reference: Mapping[str, ClassEvents],
    estimated: Mapping[str, ClassEvents],
    time_resolution_s: float = 1.0,
) -> tuple[dict[str, ClassCounts], dict[str, float]]:
    """Segment-based counts and F-measures computed by sed_eval 0.2.1.

    Runs ``sed_eval.sound_event.SegmentBasedMetrics(event_label_list=classes,
    time_resolution=...)`` with ``empty_system_output_handling='zero_score'`` (set on the
    instance: the 0.2.1 constructor does not take it) and calls ``evaluate()`` once per clip
    of ``filenames`` with ``evaluated_length_seconds=None`` (sed_eval then evaluates up to the
    largest reference or system offset of the clip).

    Args:
        filenames: Every evaluated clip (the ground truth's clips); index = clip id.
        classes: The event label list.
        reference: Per class label, the reference events (clip indices into ``filenames``).
        estimated: Per class label, the system events.
        time_resolution_s: Segment length in seconds (> 0).

    Returns:
        Per-class counts (active reference segments, active system segments, segments active
        in both) and per-class F-measures plus ``'__macro__'``, as
        :func:`sed_eval_event_counts`.

    Raises:
        ValueError: From sed_eval for a resolution <= 0; for empty or duplicate classes; for
            clip indices outside ``filenames``.
    """
    import sed_eval

    labels = _check_classes(classes)
    metrics = sed_eval.sound_event.SegmentBasedMetrics(
        event_label_list=labels,
        time_resolution=float(time_resolution_s),
    )
    metrics.empty_system_output_handling = "zero_score"
    ref = _per_clip_event_lists(filenames, labels, reference)
    est = _per_clip_event_lists(filenames, labels, estimated)
    for r, e in zip(ref, est, strict=True):
        metrics.evaluate(reference_event_list=r, estimated_event_list=e, evaluated_length_seconds=None)
    return _collect(metrics, labels)
