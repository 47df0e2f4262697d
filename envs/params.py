"""Per-class stack parameters and the versioned parameter file.

The parameter file is what users take into inference (format ``sedtune.params/2``)::

    {"format": "sedtune.params/2", "frame_hop_s": 0.064,
     "classes": {
       "Dog": {"decoder": "frames", "median_filter_frames": 7, "threshold": 0.42,
               "threshold_off": null, "fill_gap_s": 0.0, "min_duration_s": 0.1},
       "Cat": {"decoder": "boxes", "median_filter_frames": 1, "step_filter_s": 0.48,
               "merge_abs": 0.2, "merge_rel": null, "confidence": "mean", "threshold": 0.35,
               "fill_gap_s": 0.0, "min_duration_s": 0.0}}}

Per class, ``decoder`` picks the decoder and its fields (a field of the other decoder is
refused):

- ``frames`` (:mod:`envs.stack`): median filter, frame threshold (``threshold_off``, optional,
  turns on hysteresis: an event starts where the filtered probability exceeds ``threshold``
  and continues while it exceeds ``threshold_off``), gap filling, minimum duration;
- ``boxes`` (:mod:`envs.boxes`): median filter, change-point boxes with a step filter of
  ``step_filter_s`` seconds, merging across shallow gaps (``merge_abs`` and/or ``merge_rel``,
  null = off), box confidence (``mean`` or ``max``) above ``threshold``, then gap filling and
  minimum duration.

Files of format ``sedtune.params/1`` (no ``decoder`` field) load as ``frames``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

from envs.errors import SedtuneInputError

PARAMS_FORMAT = "sedtune.params/2"
PARAMS_FORMAT_V1 = "sedtune.params/1"
MAX_KERNEL_FRAMES = 999
DECODERS = ("frames", "boxes")
CONFIDENCES = ("mean", "max")
# Step filters longer than this (seconds) would span whole clips of any DCASE set.
MAX_STEP_FILTER_S = 60.0
_COMMON = ("decoder", "median_filter_frames", "threshold", "fill_gap_s", "min_duration_s")
DECODER_FIELDS: dict[str, tuple[str, ...]] = {
    "frames": (*_COMMON, "threshold_off"),
    "boxes": (*_COMMON, "step_filter_s", "merge_abs", "merge_rel", "confidence"),
}


@dataclass(frozen=True)
class BoxSetting:
    """Everything that fixes a class's boxes (``boxes`` decoder): all but θ and the clean-up.

    Attributes:
        median_filter_frames: Median filter before detection, frames (odd; 1 = off).
        step_filter_s: Step-filter length L, seconds (> 0).
        merge_abs: Merge two boxes when peak - dip is below this (score units), or None.
        merge_rel: Merge two boxes when peak / dip is below this (ratio > 1), or None.
        confidence: ``"mean"`` (time-weighted mean score) or ``"max"``.
    """

    median_filter_frames: int
    step_filter_s: float
    merge_abs: float | None
    merge_rel: float | None
    confidence: str = "mean"


@dataclass(frozen=True)
class ClassParams:
    """Parameters of the stack for one class.

    Attributes:
        median_filter_frames: Median-filter kernel in frames (odd; 1 = off).
        threshold: Decision threshold in (0, 1): a frame is active where p > threshold
            (``frames``), a box is kept where its confidence > threshold (``boxes``).
        threshold_off: Hysteresis release threshold in (0, threshold], or None for none
            (``frames`` only).
        fill_gap_s: Gaps between events shorter than this (seconds) are filled.
        min_duration_s: Events shorter than this (seconds) are dropped, after gap filling.
        decoder: ``"frames"`` or ``"boxes"``.
        step_filter_s: Step-filter length in seconds, > 0 (``boxes`` only, required there).
        merge_abs: Absolute merge criterion in (0, 1], or None for off (``boxes`` only).
        merge_rel: Relative merge criterion > 1, or None for off (``boxes`` only).
        confidence: Box confidence, ``"mean"`` or ``"max"`` (``boxes`` only).
    """

    median_filter_frames: int = 1
    threshold: float = 0.5
    threshold_off: float | None = None
    fill_gap_s: float = 0.0
    min_duration_s: float = 0.0
    decoder: str = "frames"
    step_filter_s: float | None = None
    merge_abs: float | None = None
    merge_rel: float | None = None
    confidence: str = "mean"

    def validate(self, where: str) -> ClassParams:
        """Check every rule; return self.

        Args:
            where: Location for messages, e.g. ``params.json, class 'Dog'``.

        Raises:
            SedtuneInputError: Naming the field and the value that breaks its rule.
        """
        if self.decoder not in DECODERS:
            raise SedtuneInputError(
                f"{where}: decoder must be one of {list(DECODERS)}, but got {self.decoder!r}"
            )
        k = self.median_filter_frames
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 or k > MAX_KERNEL_FRAMES:
            raise SedtuneInputError(
                f"{where}: median_filter_frames must be an odd integer in [1, {MAX_KERNEL_FRAMES}], "
                f"but got {k!r}"
            )
        t = self.threshold
        if not _is_number(t) or not 0.0 < t < 1.0:
            raise SedtuneInputError(f"{where}: threshold must be in (0, 1), but got {t!r}")
        if self.threshold_off is not None:
            o = self.threshold_off
            if not _is_number(o) or not 0.0 < o <= t:
                raise SedtuneInputError(
                    f"{where}: threshold_off must be in (0, threshold={t}], but got {o!r}"
                )
        for name in ("fill_gap_s", "min_duration_s"):
            v = getattr(self, name)
            if not _is_number(v) or v < 0:
                raise SedtuneInputError(f"{where}: {name} must be a number >= 0, but got {v!r}")
        if self.decoder == "frames":
            for name in ("step_filter_s", "merge_abs", "merge_rel"):
                if getattr(self, name) is not None:
                    raise SedtuneInputError(f"{where}: {name} is a field of decoder 'boxes', not 'frames'")
            return self
        if self.threshold_off is not None:
            raise SedtuneInputError(f"{where}: threshold_off is a field of decoder 'frames', not 'boxes'")
        v = self.step_filter_s
        if v is None or not _is_number(v) or not 0 < v <= MAX_STEP_FILTER_S:
            raise SedtuneInputError(
                f"{where}: step_filter_s must be a number in (0, {MAX_STEP_FILTER_S}] (seconds), "
                f"but got {v!r}"
            )
        a = self.merge_abs
        if a is not None and (not _is_number(a) or not 0 < a <= 1):
            raise SedtuneInputError(f"{where}: merge_abs must be in (0, 1] or null, but got {a!r}")
        r = self.merge_rel
        if r is not None and (not _is_number(r) or not r > 1):
            raise SedtuneInputError(f"{where}: merge_rel must be a number > 1 or null, but got {r!r}")
        if self.confidence not in CONFIDENCES:
            raise SedtuneInputError(
                f"{where}: confidence must be one of {list(CONFIDENCES)}, but got {self.confidence!r}"
            )
        return self

    @property
    def box_setting(self) -> BoxSetting:
        """What fixes the boxes (``boxes`` decoder): everything but the threshold and clean-up."""
        return BoxSetting(
            self.median_filter_frames,
            float(self.step_filter_s or 0.0),
            self.merge_abs,
            self.merge_rel,
            self.confidence,
        )

    def to_json(self) -> dict[str, Any]:
        """As a JSON-ready dict: the decoder and its own fields only."""
        d = asdict(self)
        return {f: d[f] for f in DECODER_FIELDS[self.decoder]}


def _is_number(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


FIELDS = tuple(ClassParams.__dataclass_fields__)


def class_params_from_json(obj: object, where: str, version: int = 2) -> ClassParams:
    """Parse and validate one class's parameters.

    Args:
        obj: The parsed JSON object.
        where: Location for messages (file and class).
        version: Format version of the file (1: frames fields only, no ``decoder``).

    Raises:
        SedtuneInputError: Unknown or missing fields, fields of the other decoder, wrong
            types, broken rules.
    """
    if not isinstance(obj, dict):
        raise SedtuneInputError(f"{where}: must be an object, got {type(obj).__name__}")
    decoder = obj.get("decoder", "frames") if version >= 2 else "frames"
    if decoder not in DECODERS:
        raise SedtuneInputError(f"{where}.decoder: must be one of {list(DECODERS)}, but got {decoder!r}")
    allowed = DECODER_FIELDS[decoder] if version >= 2 else DECODER_FIELDS["frames"][1:]
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        other = [f for f in unknown if f in FIELDS and f != "decoder"]
        if other:
            raise SedtuneInputError(
                f"{where}.{other[0]}: not a field of decoder {decoder!r}; allowed: {list(allowed)}"
            )
        hint = " (decoders need format 'sedtune.params/2')" if version == 1 and "decoder" in unknown else ""
        raise SedtuneInputError(f"{where}: unknown field(s) {unknown}; allowed: {list(allowed)}{hint}")
    if decoder == "boxes" and "step_filter_s" not in obj:
        raise SedtuneInputError(f"{where}: field 'step_filter_s' is required for decoder 'boxes'")
    if "threshold" not in obj:
        raise SedtuneInputError(f"{where}: field 'threshold' is required")
    kwargs = dict(obj)
    k = kwargs.get("median_filter_frames", 1)
    if isinstance(k, float) and k.is_integer():
        kwargs["median_filter_frames"] = int(k)
    return ClassParams(**kwargs).validate(where)


@dataclass(frozen=True)
class ParamFile:
    """A validated parameter file.

    Attributes:
        frame_hop_s: Frame hop (seconds) the kernels refer to.
        classes: Per class label, its parameters.
        metadata: Free-form provenance (strategy, scores, job id); not used for decoding.
    """

    frame_hop_s: float
    classes: dict[str, ClassParams]
    metadata: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """As the documented JSON object."""
        out: dict[str, Any] = {
            "format": PARAMS_FORMAT,
            "frame_hop_s": self.frame_hop_s,
            "classes": {k: v.to_json() for k, v in self.classes.items()},
        }
        if self.metadata:
            out["metadata"] = self.metadata
        return out

    def save(self, path: str) -> None:
        """Write as indented JSON."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=2, sort_keys=False)
            f.write("\n")

    def check_classes(self, classes: Sequence[str], where: str) -> None:
        """Require parameters for exactly ``classes``.

        Raises:
            SedtuneInputError: Naming the unknown or missing class.
        """
        unknown = [c for c in self.classes if c not in classes]
        if unknown:
            raise SedtuneInputError(f"{where}: unknown class {unknown[0]!r}; score classes: {list(classes)}")
        missing = [c for c in classes if c not in self.classes]
        if missing:
            raise SedtuneInputError(f"{where}: no parameters for class {missing[0]!r}")

    @staticmethod
    def uniform(classes: Sequence[str], frame_hop_s: float, params: ClassParams) -> ParamFile:
        """The same parameters for every class."""
        return ParamFile(frame_hop_s, {c: params for c in classes})


def params_from_json(obj: object, where: str) -> ParamFile:
    """Validate a parsed parameter file.

    Raises:
        SedtuneInputError: Wrong format tag, hop or class entries.
    """
    if not isinstance(obj, dict):
        raise SedtuneInputError(f"{where}: must be a JSON object")
    if obj.get("format") not in (PARAMS_FORMAT, PARAMS_FORMAT_V1):
        raise SedtuneInputError(
            f"{where}: field 'format' must be {PARAMS_FORMAT!r} (or {PARAMS_FORMAT_V1!r}), "
            f"but got {obj.get('format')!r}"
        )
    version = 1 if obj.get("format") == PARAMS_FORMAT_V1 else 2
    hop = obj.get("frame_hop_s")
    if not _is_number(hop) or hop <= 0:
        raise SedtuneInputError(f"{where}: field 'frame_hop_s' must be a number > 0, but got {hop!r}")
    classes = obj.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise SedtuneInputError(f"{where}: field 'classes' must be a non-empty object")
    parsed = {str(k): class_params_from_json(v, f"{where}, classes.{k}", version) for k, v in classes.items()}
    meta = obj.get("metadata")
    return ParamFile(float(hop), parsed, meta if isinstance(meta, dict) else None)


def load_params(path: str) -> ParamFile:
    """Read and validate a parameter file.

    Raises:
        SedtuneInputError: Missing file, invalid JSON, invalid content.
    """
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise SedtuneInputError(f"{path}: parameter file not found") from None
    except OSError as e:
        raise SedtuneInputError(f"{path}: cannot read the parameter file ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SedtuneInputError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise SedtuneInputError(f"{path}: JSON nested too deeply for a parameter file") from None
    return params_from_json(obj, path)


def check_hop(params: ParamFile, frame_hop_s: float, where: str) -> None:
    """Require the parameter file's hop to equal the scores' hop (kernels are in frames)."""
    if not math.isclose(params.frame_hop_s, frame_hop_s, rel_tol=1e-9):
        raise SedtuneInputError(
            f"{where}: frame_hop_s {params.frame_hop_s} differs from the scores' {frame_hop_s}"
        )
