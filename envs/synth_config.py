"""What defines a synthetic set: :class:`SynthConfig`, validated on construction.

The same config gives the same files (:func:`envs.synth.generate`); how its fields shape the
events and scores is :mod:`envs.synth_scores`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

from envs.errors import SedtuneInputError
from envs.scoreformat import check_classes

#: Target number of (clip, frame, class) cells generated at once: ~8 MB per float32 array.
CELLS_PER_CHUNK = 1 << 21
#: The DESED class names; the default classes of a set of at most ten classes.
DESED_CLASSES = (
    "Alarm_bell_ringing",
    "Blender",
    "Cat",
    "Dishes",
    "Dog",
    "Electric_shaver_toothbrush",
    "Frying",
    "Running_water",
    "Speech",
    "Vacuum_cleaner",
)

_RANGE_FIELDS = (
    "event_duration_range_s",
    "gain_logit_range",
    "calibration_bias_logit_range",
    "onset_lag_range_s",
    "offset_lag_range_s",
    "confusion_fraction_range",
    "fp_burst_duration_range_s",
    "fp_burst_strength_range",
)


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic set; the same config gives the same files.

    A ``*_range`` field is a (low, high) pair from which each class draws its own value
    uniformly (log-uniformly for durations).

    Attributes:
        n_clips: Number of clips.
        n_classes: Number of classes.
        clip_duration_s: Duration of every clip, seconds.
        frame_hop_s: Seconds between frame onsets; a clip has ceil(duration / hop) frames.
        seed: Seed (>= 0) of every random draw.
        clips_per_shard: Clips per Parquet shard (does not change any value).
        class_names: Class labels; default the first DESED names when n_classes <= 10,
            else ``class_000``, ``class_001``, ... DESED names get DESED-like profiles.
        mean_events_per_clip: Mean number of events per clip with events, all classes together.
        class_rate_ratio: Frequency of the most common over the rarest generic class.
        event_rate_per_clip: Per class, the mean number of its events per clip with events;
            overrides ``mean_events_per_clip`` and the class profiles' frequencies.
        max_events_per_class: Most events of one class in one clip.
        empty_clip_fraction: Fraction of clips drawn to have no event at all.
        event_duration_range_s: Shortest and longest event of generic classes, seconds.
        event_duration_spread: Longest over shortest event within one generic class.
        min_event_gap_s: Least silence between two events of one class in a clip, seconds.
        gain_logit_range: Logit rise from silence to a fully heard event, per class.
        calibration_bias_logit_range: Per-class logit offset on top of a calibrated output
            (one where an event at half strength scores 0.5); moves the best threshold.
        event_strength_std: Std of the log of the per-event strength (weak, missed events).
        noise_std_logit: Std of the AR(1) logit noise.
        noise_correlation_s: Correlation time of that noise, seconds (AR(1) coefficient
            exp(-hop / time)); short times give spiky noise that a median filter removes.
        clip_offset_std_logit: Std of a per-(clip, class) logit offset (recording conditions).
        clip_calibration_std_logit: Std of a per-clip logit offset shared by every class (a
            clip-level miscalibration, e.g. gain or noise floor). It shifts the clip's best
            threshold by the same amount in logit space and is visible in the clip: every
            class's silent frames move with it. 0 (the default) draws nothing, so sets of
            earlier configs are unchanged.
        response_smoothing_s: Time constant of the symmetric smoothing of the response, seconds
            (0 = none); soft edges make the threshold shift the detected onsets and offsets.
        onset_lag_range_s: Per-class delay of the response's onset, seconds (negative = early).
        offset_lag_range_s: Per-class delay of the response's offset, seconds.
        lag_jitter_s: Std of the per-event jitter added to both lags, seconds.
        confusion_fraction_range: Per-class fraction of its response that leaks into its
            confusable class.
        fp_bursts_per_event: False-positive bursts of a class per true event of that class.
        fp_burst_duration_range_s: Shortest and longest false-positive burst, seconds.
        fp_burst_strength_range: Strength of a burst relative to a true event.
    """

    n_clips: int = 1000
    n_classes: int = 10
    clip_duration_s: float = 10.0
    frame_hop_s: float = 0.064
    seed: int = 0
    clips_per_shard: int = 2000
    class_names: tuple[str, ...] | None = None
    mean_events_per_clip: float = 3.5
    class_rate_ratio: float = 30.0
    event_rate_per_clip: tuple[float, ...] | None = None
    max_events_per_class: int = 8
    empty_clip_fraction: float = 0.05
    event_duration_range_s: tuple[float, float] = (0.2, 20.0)
    event_duration_spread: float = 10.0
    min_event_gap_s: float = 0.2
    gain_logit_range: tuple[float, float] = (5.0, 9.0)
    calibration_bias_logit_range: tuple[float, float] = (-2.5, 2.5)
    event_strength_std: float = 0.35
    noise_std_logit: float = 0.6
    noise_correlation_s: float = 0.08
    clip_offset_std_logit: float = 0.5
    clip_calibration_std_logit: float = 0.0
    response_smoothing_s: float = 0.1
    onset_lag_range_s: tuple[float, float] = (-0.05, 0.25)
    offset_lag_range_s: tuple[float, float] = (0.0, 0.4)
    lag_jitter_s: float = 0.08
    confusion_fraction_range: tuple[float, float] = (0.0, 0.3)
    fp_bursts_per_event: float = 0.5
    fp_burst_duration_range_s: tuple[float, float] = (0.05, 1.0)
    fp_burst_strength_range: tuple[float, float] = (0.4, 1.0)

    def __post_init__(self) -> None:
        for name in ("n_clips", "n_classes", "clips_per_shard", "max_events_per_class", "seed"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise SedtuneInputError(f"{name} must be an integer, but got {name}={value!r}")
        _check_min("n_clips", self.n_clips, 1)
        _check_min("n_classes", self.n_classes, 1)
        _check_min("clips_per_shard", self.clips_per_shard, 1)
        _check_min("max_events_per_class", self.max_events_per_class, 1)
        _check_min("seed", self.seed, 0)
        _check_min("clip_duration_s", self.clip_duration_s, 0.1)
        if not (0 < self.frame_hop_s <= self.clip_duration_s):
            raise SedtuneInputError(
                "frame_hop_s must be > 0 and <= clip_duration_s, but got "
                f"({self.frame_hop_s=}, {self.clip_duration_s=})"
            )
        for name in (
            "mean_events_per_clip",
            "event_strength_std",
            "noise_std_logit",
            "clip_offset_std_logit",
            "clip_calibration_std_logit",
            "response_smoothing_s",
            "lag_jitter_s",
            "fp_bursts_per_event",
            "min_event_gap_s",
        ):
            _check_min(name, getattr(self, name), 0.0)
        _check_min("class_rate_ratio", self.class_rate_ratio, 1.0)
        _check_min("event_duration_spread", self.event_duration_spread, 1.0)
        if not (self.noise_correlation_s > 0 and math.isfinite(self.noise_correlation_s)):
            raise SedtuneInputError(f"noise_correlation_s must be > 0, but got {self.noise_correlation_s=}")
        if not (0.0 <= self.empty_clip_fraction <= 1.0):
            raise SedtuneInputError(
                f"empty_clip_fraction must be in [0, 1], but got {self.empty_clip_fraction=}"
            )
        for name in _RANGE_FIELDS:
            _check_range(name, getattr(self, name))
        for name in ("event_duration_range_s", "fp_burst_duration_range_s"):
            if getattr(self, name)[0] < 0.01:
                raise SedtuneInputError(
                    f"{name} must start at >= 0.01 s, but got {name}={getattr(self, name)}"
                )
        if self.confusion_fraction_range[0] < 0 or self.fp_burst_strength_range[0] < 0:
            raise SedtuneInputError(
                "confusion_fraction_range and fp_burst_strength_range must be >= 0, but got "
                f"({self.confusion_fraction_range=}, {self.fp_burst_strength_range=})"
            )
        self._check_per_class()

    def _check_per_class(self) -> None:
        if self.class_names is not None:
            if len(self.class_names) != self.n_classes:
                raise SedtuneInputError(
                    "class_names must have n_classes entries, but got "
                    f"{len(self.class_names)} names and {self.n_classes=}"
                )
            check_classes(self.class_names, "class_names")
        rates = self.event_rate_per_clip
        if rates is not None:
            if len(rates) != self.n_classes:
                raise SedtuneInputError(
                    "event_rate_per_clip must have n_classes entries, but got "
                    f"{len(rates)} rates and {self.n_classes=}"
                )
            if not all(r >= 0 and math.isfinite(r) for r in rates):
                raise SedtuneInputError(f"event_rate_per_clip must be >= 0, but got {rates=}")

    @property
    def classes(self) -> list[str]:
        """The class labels in column order."""
        if self.class_names is not None:
            return list(self.class_names)
        if self.n_classes <= len(DESED_CLASSES):
            return list(DESED_CLASSES[: self.n_classes])
        return [f"class_{k:03d}" for k in range(self.n_classes)]

    @property
    def n_frames(self) -> int:
        """Frames per clip: ceil(clip_duration_s / frame_hop_s)."""
        # Rounding first keeps 1.1 / 0.1 = 11.000000000000002 at 11 frames.
        return math.ceil(round(self.clip_duration_s / self.frame_hop_s, 9))

    @property
    def chunk_clips(self) -> int:
        """Clips generated per chunk (a function of classes and frames only)."""
        return max(1, min(4096, CELLS_PER_CHUNK // (self.n_classes * self.n_frames)))

    def as_dict(self) -> dict[str, object]:
        """The config as a flat dict (for logging and tracking)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_min(name: str, value: float, low: float) -> None:
    if not (value >= low and math.isfinite(value)):
        raise SedtuneInputError(f"{name} must be >= {low}, but got {name}={value}")


def _check_range(name: str, pair: tuple[float, float]) -> None:
    ok = len(pair) == 2 and all(math.isfinite(v) for v in pair) and pair[0] <= pair[1]
    if not ok:
        raise SedtuneInputError(f"{name} must be a (low, high) pair with low <= high, but got {name}={pair}")
