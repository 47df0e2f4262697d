"""The joint per-class search space as Tune configurations: the space, decoding, encoding.

Random and Bayes search (:mod:`service.strategies.tune_search`) search every class's
parameters at once (the *joint* space: per class a median-filter kernel, a threshold and, where
the space offers more than one value, a gap fill and a minimum duration). A configuration is a
flat dict keyed by class index (:func:`param_space`).

Two decoders: when the space searches both ``frames`` and ``boxes``, every class gets a
categorical ``decoder`` dimension; the ``frames`` kernel and the box stages (box kernel, step
filter, merge criterion, confidence: separate categoricals, each only when it has more than one
value) apply only under their decoder; the threshold, gap and minimum duration are shared.
Random search draws every dimension and ignores the inactive ones (the same distribution as
drawing them conditionally). TPE gets the conditional space as an Optuna define-by-run
function (:class:`ConditionalSpace`): an inactive dimension is not suggested, so it never
enters TPE's model through trials where it had no effect. With one decoder the Tune config is
the ``frames``-only one of before (no decoder dimension).

Ray is imported inside :func:`param_space` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envs.params import ClassParams
from envs.snap import snap_params
from envs.space import SearchSpace

# Tune config keys per class field. Keys are flat and name the class by index: class labels
# may hold any character, and Tune splits nested config keys on "/".
_KERNEL, _THRESHOLD, _GAP, _MIN_DUR = "kernel", "threshold", "gap", "min_dur"
# Two-decoder and boxes dimensions (the merge criterion is an index into space.box_merge:
# Optuna categoricals hold scalars, not (abs, rel) pairs).
_DECODER, _BOX_KERNEL, _STEP, _MERGE, _CONF = "decoder", "box_kernel", "step_filter", "merge", "confidence"


def _key(class_index: int, name: str) -> str:
    return f"c{class_index:04d}_{name}"


@dataclass(frozen=True)
class _Dim:
    """One per-class dimension of the Tune config.

    Attributes:
        name: Key suffix (``kernel``, ``threshold``, ...).
        choices: Categorical values; None for the threshold (uniform in the space's range).
        decoder: The decoder under which it applies (two-decoder spaces), None: always.
    """

    name: str
    choices: tuple[Any, ...] | None
    decoder: str | None = None


def _dims(space: SearchSpace) -> list[_Dim]:
    """Every class's dimensions in config order; a stage with one value takes none.

    ``frames`` only: kernel, threshold, gap, minimum duration (the order of old configs).
    """
    two = len(space.decoders) > 1
    out: list[_Dim] = []
    if two:
        out.append(_Dim(_DECODER, tuple(space.decoders)))
    if "frames" in space.decoders and len(space.kernels) > 1:
        out.append(_Dim(_KERNEL, tuple(int(k) for k in space.kernels), "frames" if two else None))
    if "boxes" in space.decoders:
        box_dims: list[tuple[str, tuple[Any, ...]]] = [
            (_BOX_KERNEL, tuple(int(k) for k in space.box_kernels)),
            (_STEP, tuple(float(x) for x in space.box_step_filter_s)),
            (_MERGE, tuple(range(len(space.box_merge)))),
            (_CONF, tuple(str(c) for c in space.box_confidence)),
        ]
        out += [_Dim(n, v, "boxes" if two else None) for n, v in box_dims if len(v) > 1]
    out.append(_Dim(_THRESHOLD, None))
    if len(space.fill_gap_s) > 1:
        out.append(_Dim(_GAP, tuple(float(g) for g in space.fill_gap_s)))
    if len(space.min_duration_s) > 1:
        out.append(_Dim(_MIN_DUR, tuple(float(d) for d in space.min_duration_s)))
    return out


def param_space(space: SearchSpace, n_classes: int) -> dict[str, Any]:
    """The Tune search space of the joint per-class problem (every dimension, flat).

    A discrete dimension (decoder, kernel, box stages, gap, minimum duration) is a
    ``tune.choice`` included only when the space offers more than one value; the threshold
    is uniform in the space's range. With two decoders the dimensions of the decoder a class
    did not draw are drawn too and ignored (:func:`decode`); TPE uses
    :class:`ConditionalSpace` instead.

    Args:
        space: The per-class space.
        n_classes: Number of classes.

    Returns:
        Flat dict of Tune domains keyed ``c0000_kernel``, ``c0000_threshold``, ...
    """
    from ray import tune

    dims = _dims(space)
    out: dict[str, Any] = {}
    for i in range(n_classes):
        for d in dims:
            if d.choices is None:
                out[_key(i, d.name)] = tune.uniform(space.threshold_low, space.threshold_high)
            else:
                out[_key(i, d.name)] = tune.choice(list(d.choices))
    return out


@dataclass(frozen=True)
class ConditionalSpace:
    """The joint space as an Optuna define-by-run function (TPE on two-decoder spaces).

    Per class it suggests the decoder first, then only that decoder's dimensions, then the
    shared threshold, gap and minimum duration: TPE models a conditional dimension on the
    trials where it was active only. Keys and values are those of :func:`param_space`.
    A module-level class, not a closure, so that Tune can pickle the searcher.

    Attributes:
        space: The per-class space.
        n_classes: Number of classes.
    """

    space: SearchSpace
    n_classes: int

    def __call__(self, trial: Any) -> None:
        """Suggest every class's active dimensions on an ``optuna.Trial``."""
        dims = _dims(self.space)
        for i in range(self.n_classes):
            decoder = self.space.decoders[0]
            for d in dims:
                if d.decoder is not None and d.decoder != decoder:
                    continue
                name = _key(i, d.name)
                if d.choices is None:
                    trial.suggest_float(name, self.space.threshold_low, self.space.threshold_high)
                    continue
                value = trial.suggest_categorical(name, list(d.choices))
                if d.name == _DECODER:
                    decoder = str(value)


def decode(config: Mapping[str, Any], classes: Sequence[str], space: SearchSpace) -> dict[str, ClassParams]:
    """Per-class parameters of a Tune config; dimensions left out take the space's only value.

    Dimensions of the decoder a class did not choose are ignored.
    """
    out = {}
    for i, c in enumerate(classes):

        def get(name: str, default: Any, i: int = i) -> Any:
            return config.get(_key(i, name), default)

        decoder = str(get(_DECODER, space.decoders[0]))
        threshold = float(config[_key(i, _THRESHOLD)])
        gap = float(get(_GAP, space.fill_gap_s[0]))
        dur = float(get(_MIN_DUR, space.min_duration_s[0]))
        if decoder == "frames":
            out[c] = ClassParams(
                median_filter_frames=int(get(_KERNEL, space.kernels[0])),
                threshold=threshold,
                fill_gap_s=gap,
                min_duration_s=dur,
            )
            continue
        merge_abs, merge_rel = space.box_merge[int(get(_MERGE, 0))]
        out[c] = ClassParams(
            median_filter_frames=int(get(_BOX_KERNEL, space.box_kernels[0])),
            threshold=threshold,
            fill_gap_s=gap,
            min_duration_s=dur,
            decoder="boxes",
            step_filter_s=float(get(_STEP, space.box_step_filter_s[0])),
            merge_abs=merge_abs,
            merge_rel=merge_rel,
            confidence=str(get(_CONF, space.box_confidence[0])),
        )
    return out


def _value(p: ClassParams, name: str, space: SearchSpace) -> Any:
    """The config value of one dimension for in-space parameters ``p``."""
    if name == _MERGE:
        pair = (p.merge_abs, p.merge_rel)
        return next(j for j, m in enumerate(space.box_merge) if tuple(m) == pair)
    attr = {
        _DECODER: "decoder",
        _KERNEL: "median_filter_frames",
        _BOX_KERNEL: "median_filter_frames",
        _STEP: "step_filter_s",
        _CONF: "confidence",
        _THRESHOLD: "threshold",
        _GAP: "fill_gap_s",
        _MIN_DUR: "min_duration_s",
    }[name]
    return getattr(p, attr)


def encode(params: Mapping[str, ClassParams], classes: Sequence[str], space: SearchSpace) -> dict[str, Any]:
    """A Tune config (a ``points_to_evaluate`` entry) of per-class parameters, snapped into the space.

    Only the dimensions of :func:`param_space` appear (searchers require warm-start points
    with exactly the space's keys), and of a two-decoder space only those of each class's
    decoder (:class:`ConditionalSpace`'s keys).
    """
    dims = _dims(space)
    out: dict[str, Any] = {}
    for i, c in enumerate(classes):
        p = snap_params(params[c], space)
        for d in dims:
            if d.decoder is None or d.decoder == p.decoder:
                out[_key(i, d.name)] = _value(p, d.name, space)
    return out
