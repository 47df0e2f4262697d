"""Per-class stack parameters and the versioned parameter file.

The parameter file is what users take into inference::

    {"format": "sedtune.params/1", "frame_hop_s": 0.064,
     "classes": {"Dog": {"median_filter_frames": 7, "threshold": 0.42,
                         "threshold_off": null, "fill_gap_s": 0.0, "min_duration_s": 0.1}}}

``threshold_off`` (optional) turns on hysteresis: an event starts where the filtered
probability exceeds ``threshold`` and continues while it exceeds ``threshold_off``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

from envs.errors import SedtuneInputError

PARAMS_FORMAT = "sedtune.params/1"
MAX_KERNEL_FRAMES = 999


@dataclass(frozen=True)
class ClassParams:
    """Parameters of the stack for one class.

    Attributes:
        median_filter_frames: Median-filter kernel in frames (odd; 1 = off).
        threshold: Decision threshold in (0, 1); a frame is active where p > threshold.
        threshold_off: Hysteresis release threshold in (0, threshold], or None for none.
        fill_gap_s: Gaps between events shorter than this (seconds) are filled.
        min_duration_s: Events shorter than this (seconds) are dropped, after gap filling.
    """

    median_filter_frames: int = 1
    threshold: float = 0.5
    threshold_off: float | None = None
    fill_gap_s: float = 0.0
    min_duration_s: float = 0.0

    def validate(self, where: str) -> ClassParams:
        """Check every rule; return self.

        Args:
            where: Location for messages, e.g. ``params.json, class 'Dog'``.

        Raises:
            SedtuneInputError: Naming the field and the value that breaks its rule.
        """
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
        return self

    def to_json(self) -> dict[str, Any]:
        """As a JSON-ready dict."""
        return asdict(self)


def _is_number(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


FIELDS = tuple(ClassParams.__dataclass_fields__)


def class_params_from_json(obj: object, where: str) -> ClassParams:
    """Parse and validate one class's parameters.

    Raises:
        SedtuneInputError: Unknown or missing fields, wrong types, broken rules.
    """
    if not isinstance(obj, dict):
        raise SedtuneInputError(f"{where}: must be an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise SedtuneInputError(f"{where}: unknown field(s) {unknown}; allowed: {list(FIELDS)}")
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
    if obj.get("format") != PARAMS_FORMAT:
        raise SedtuneInputError(
            f"{where}: field 'format' must be {PARAMS_FORMAT!r}, but got {obj.get('format')!r}"
        )
    hop = obj.get("frame_hop_s")
    if not _is_number(hop) or hop <= 0:
        raise SedtuneInputError(f"{where}: field 'frame_hop_s' must be a number > 0, but got {hop!r}")
    classes = obj.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise SedtuneInputError(f"{where}: field 'classes' must be a non-empty object")
    parsed = {str(k): class_params_from_json(v, f"{where}, classes.{k}") for k, v in classes.items()}
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
    return params_from_json(obj, path)


def check_hop(params: ParamFile, frame_hop_s: float, where: str) -> None:
    """Require the parameter file's hop to equal the scores' hop (kernels are in frames)."""
    if not math.isclose(params.frame_hop_s, frame_hop_s, rel_tol=1e-9):
        raise SedtuneInputError(
            f"{where}: frame_hop_s {params.frame_hop_s} differs from the scores' {frame_hop_s}"
        )


def as_mapping(p: ParamFile | Mapping[str, ClassParams]) -> Mapping[str, ClassParams]:
    """The per-class mapping of a ParamFile or mapping."""
    return p.classes if isinstance(p, ParamFile) else p
