"""Synthetic SED model outputs with ground truth, deterministic by seed, streamed to disk.

:func:`generate` writes a score set (Parquet shards, see :mod:`envs.scoreset`), a DCASE
ground-truth TSV and a durations TSV that look like the validation outputs of a real sound
event detection model, so that the post-processing stack has something to fix:

- events: per class, a mean number of events per clip (long-tailed class frequencies, or
  DESED-like frequencies for the DESED class names), event durations from a per-class range
  (impulsive classes such as Dog ~0.3-3 s, stationary classes such as Frying up to the whole
  clip), same-class events never overlap, a fraction of clips has no event at all;
- model response: the events as the model "hears" them, late or early by a per-class onset
  and offset lag plus per-event jitter, with a per-event strength (weak events get missed),
  smoothed in time, with a fraction of each class's response leaking into a confusable class
  and false-positive bursts (short ones that a median filter removes, longer ones that only a
  higher threshold removes);
- scores: ``sigmoid(gain_c * response + bias_c + clip offset + AR(1) noise)``; the per-class
  bias is miscalibrated on purpose, so the best threshold is not 0.5 and differs by class.

Memory: clips are generated in chunks of about :data:`CELLS_PER_CHUNK` (frame, class) cells
and written at once (scores through :class:`envs.scoreset.ScoreSetWriter`, TSV rows appended
to the open files), so sets of any size stream through a bounded amount of memory: one chunk
plus the writer's shard buffer (about 3 x clips_per_shard x classes x frames x 4 bytes while
it flushes).

Determinism: class properties come from ``SeedSequence(seed, spawn_key=(0, class index))``,
the confusion cycle from ``spawn_key=(2,)`` and chunk ``i`` from ``spawn_key=(1, i)``. The
chunk size depends only on the number of classes and frames (:attr:`SynthConfig.chunk_clips`),
so the same config gives identical scores and ground truth (given the same numpy and scipy
versions; numpy's SIMD math may differ in the last bit between CPU families), and
``clips_per_shard`` does not change any value.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import IO

import numpy as np
import numpy.typing as npt
import pyarrow.fs as pafs
from scipy.signal import lfilter
from scipy.special import expit

from envs.errors import SedtuneInputError
from envs.scoreset import ScoreSetWriter, check_classes, resolve

LOG = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: Target number of (clip, frame, class) cells generated at once: ~8 MB per float32 array.
CELLS_PER_CHUNK = 1 << 21
#: At most this many false-positive bursts per clip and class.
MAX_FP_BURSTS = 4

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
#: DESED-like class profiles: (relative frequency, shortest and longest event in seconds).
#: Frequencies follow the DESED validation set (Speech ~40% of events); durations are drawn
#: log-uniformly and cut at the clip's end, so stationary classes often span the whole clip.
DESED_PROFILES: dict[str, tuple[float, float, float]] = {
    "Alarm_bell_ringing": (420.0, 0.3, 5.0),
    "Blender": (94.0, 1.2, 14.0),
    "Cat": (341.0, 0.3, 3.0),
    "Dishes": (559.0, 0.2, 1.2),
    "Dog": (570.0, 0.25, 3.0),
    "Electric_shaver_toothbrush": (65.0, 3.0, 25.0),
    "Frying": (94.0, 3.5, 30.0),
    "Running_water": (237.0, 1.0, 16.0),
    "Speech": (1752.0, 0.4, 3.0),
    "Vacuum_cleaner": (92.0, 4.0, 30.0),
}
#: DESED classes ordered so that neighbours sound alike; class i leaks into class i+1.
DESED_CONFUSION_CYCLE = (
    "Dog",
    "Cat",
    "Speech",
    "Alarm_bell_ringing",
    "Dishes",
    "Blender",
    "Electric_shaver_toothbrush",
    "Vacuum_cleaner",
    "Running_water",
    "Frying",
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


@dataclass(frozen=True)
class SynthResult:
    """What :func:`generate` wrote.

    Attributes:
        scores_uri: Score set directory (Parquet shards).
        ground_truth_path: DCASE ground-truth TSV.
        durations_path: Durations TSV.
        n_clips: Clips written.
        n_events: Ground-truth events written.
        classes: Class labels in column order.
    """

    scores_uri: str
    ground_truth_path: str
    durations_path: str
    n_clips: int
    n_events: int
    classes: list[str]


def _check_min(name: str, value: float, low: float) -> None:
    if not (value >= low and math.isfinite(value)):
        raise SedtuneInputError(f"{name} must be >= {low}, but got {name}={value}")


def _check_range(name: str, pair: tuple[float, float]) -> None:
    ok = len(pair) == 2 and all(math.isfinite(v) for v in pair) and pair[0] <= pair[1]
    if not ok:
        raise SedtuneInputError(f"{name} must be a (low, high) pair with low <= high, but got {name}={pair}")


@dataclass(frozen=True)
class _Profiles:
    """Per-class properties, each an array over classes."""

    rate: F64  # mean events per clip with events
    dur_lo_s: F64
    dur_hi_s: F64
    gain: F64
    bias: F64
    onset_lag_s: F64
    offset_lag_s: F64
    leak: F64  # fraction of the source class's response added to this class
    leak_src: I64  # the class that leaks into this one
    fp_rate: F64  # false-positive bursts per clip


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _profiles(cfg: SynthConfig) -> _Profiles:
    """Draw every class's properties, class k from its own stream (seed, 0, k)."""
    classes = cfg.classes
    n = len(classes)
    cols: dict[str, list[float]] = {k: [] for k in ("w", "lo", "hi", "gain", "bias", "on", "off", "leak")}
    d_lo, d_hi = cfg.event_duration_range_s
    for k, name in enumerate(classes):
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(0, k)))
        weight = _log_uniform(rng, 1.0, cfg.class_rate_ratio)
        lo = _log_uniform(rng, d_lo, max(d_lo, d_hi / cfg.event_duration_spread))
        hi = min(d_hi, lo * cfg.event_duration_spread)
        if name in DESED_PROFILES:
            weight, lo, hi = DESED_PROFILES[name]
        gain = rng.uniform(*cfg.gain_logit_range)
        cols["w"].append(weight)
        cols["lo"].append(lo)
        cols["hi"].append(hi)
        cols["gain"].append(gain)
        # Calibrated means a half-strength response sits at logit 0; then miscalibrate.
        cols["bias"].append(-0.5 * gain + rng.uniform(*cfg.calibration_bias_logit_range))
        cols["on"].append(rng.uniform(*cfg.onset_lag_range_s))
        cols["off"].append(rng.uniform(*cfg.offset_lag_range_s))
        cols["leak"].append(rng.uniform(*cfg.confusion_fraction_range) if n > 1 else 0.0)
    w = np.asarray(cols["w"])
    if cfg.event_rate_per_clip is not None:
        rate = np.asarray(cfg.event_rate_per_clip, dtype=np.float64)
    else:
        rate = cfg.mean_events_per_clip * w / w.sum()
    return _Profiles(
        rate=rate,
        dur_lo_s=np.asarray(cols["lo"]),
        dur_hi_s=np.asarray(cols["hi"]),
        gain=np.asarray(cols["gain"]),
        bias=np.asarray(cols["bias"]),
        onset_lag_s=np.asarray(cols["on"]),
        offset_lag_s=np.asarray(cols["off"]),
        leak=np.asarray(cols["leak"]),
        leak_src=_confusion_sources(cfg, classes),
        fp_rate=cfg.fp_bursts_per_event * rate,
    )


def _confusion_sources(cfg: SynthConfig, classes: list[str]) -> I64:
    """For every class, the class that leaks into it: one cycle through all classes.

    DESED classes follow :data:`DESED_CONFUSION_CYCLE` (alike sounds next to each other);
    other classes a seeded random order. A cycle makes each class both leak and receive once.
    """
    desed = [c for c in DESED_CONFUSION_CYCLE if c in classes]
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(2,)))
    others = [classes[i] for i in rng.permutation(len(classes)) if classes[i] not in desed]
    order = [classes.index(c) for c in desed + others]
    src = np.arange(len(classes), dtype=np.int64)
    for i, k in enumerate(order):
        src[k] = order[i - 1]
    return src


@dataclass(frozen=True)
class _Events:
    """Events of a chunk in padded slots, shape (clips, classes, slots); seconds."""

    onset_s: F64
    offset_s: F64
    valid: B


def _sample_counts(rng: np.random.Generator, cfg: SynthConfig, prof: _Profiles, n: int) -> I64:
    """Events per (clip, class): empty clips, Poisson counts, at least one event otherwise."""
    n_cls = len(prof.rate)
    empty = rng.random(n) < cfg.empty_clip_fraction
    counts = np.minimum(rng.poisson(prof.rate, size=(n, n_cls)), cfg.max_events_per_class)
    counts[empty] = 0
    # A clip that was not drawn empty gets one event, so empty_clip_fraction means what it says.
    lonely = np.flatnonzero(~empty & (counts.sum(axis=1) == 0))
    total = prof.rate.sum()
    if len(lonely) and total > 0:
        counts[lonely, rng.choice(n_cls, size=len(lonely), p=prof.rate / total)] = 1
    return counts.astype(np.int64)


def _sample_events(rng: np.random.Generator, cfg: SynthConfig, prof: _Profiles, n: int) -> _Events:
    """Non-overlapping same-class events inside [0, clip_duration_s], 3-decimal seconds."""
    t_s, gap_s = cfg.clip_duration_s, cfg.min_event_gap_s
    counts = _sample_counts(rng, cfg, prof, n)
    slots = max(1, int(counts.max()))
    m = np.arange(slots)
    lo, hi = np.log(prof.dur_lo_s)[:, None], np.log(prof.dur_hi_s)[:, None]
    dur = np.minimum(np.exp(lo + rng.random((n, len(prof.rate), slots)) * (hi - lo)), t_s)
    # Drop the last events of a (clip, class) until its events and gaps fit in the clip.
    while True:
        valid = m < counts[..., None]
        dur = np.where(valid, dur, 0.0)
        free = t_s - dur.sum(axis=-1) - np.maximum(counts - 1, 0) * gap_s
        over = free < 0
        if not over.any():
            break
        counts[over] -= 1
    # Sorted uniform positions share the free time out among the gaps before each event.
    u = np.sort(np.where(valid, rng.random(dur.shape), np.inf), axis=-1)
    start = np.where(valid, u, 0.0) * free[..., None]
    onset = start + np.cumsum(dur, axis=-1) - dur + m * gap_s
    onset_r = np.round(onset, 3)
    last_s = math.floor(t_s * 1000 + 1e-6) / 1000
    offset_r = np.minimum(np.maximum(np.round(onset + dur, 3), onset_r + 0.001), last_s)
    return _Events(onset_r, offset_r, valid)


def _render(start_s: F64, end_s: F64, amp: F64, cfg: SynthConfig) -> F32:
    """Per row and frame, the max over slots of amp x the frame's covered fraction.

    Args:
        start_s: Starts of the slots, seconds, shape (rows, slots).
        end_s: Ends of the slots, seconds, shape (rows, slots).
        amp: Amplitude of each slot (0 for an empty slot), shape (rows, slots).
        cfg: Gives the frame hop and the number of frames.

    Returns:
        Shape (rows, frames).
    """
    hop = cfg.frame_hop_s
    edges = np.arange(cfg.n_frames + 1) * hop
    out = np.zeros((start_s.shape[0], cfg.n_frames), dtype=np.float32)
    for s in range(start_s.shape[1]):
        a, b = start_s[:, s, None], end_s[:, s, None]
        cover = np.clip(np.minimum(b, edges[1:]) - np.maximum(a, edges[:-1]), 0.0, hop) / hop
        np.maximum(out, cover * amp[:, s, None], out=out, casting="unsafe")
    return out


def _smooth(x: F32, time_s: float, hop_s: float) -> F32:
    """Forward-backward first-order low-pass over time (last axis); zero phase."""
    if time_s <= 0:
        return x
    alpha = math.exp(-hop_s / time_s)
    b, a = [1.0 - alpha], [1.0, -alpha]
    # Start in steady state so that an event at the clip's edge is not faded in.
    y = lfilter(b, a, x, axis=-1, zi=alpha * x[..., :1])[0]
    y = lfilter(b, a, y[..., ::-1], axis=-1, zi=alpha * y[..., -1:])[0][..., ::-1]
    return np.asarray(y, dtype=np.float32)


def _ar1_noise(rng: np.random.Generator, cfg: SynthConfig, shape: tuple[int, ...]) -> F32:
    """Stationary AR(1) noise over the last axis, std ``noise_std_logit``."""
    phi = math.exp(-cfg.frame_hop_s / cfg.noise_correlation_s)
    innov = math.sqrt(1.0 - phi * phi)
    e = rng.standard_normal(shape, dtype=np.float32)
    e *= np.float32(cfg.noise_std_logit * innov)
    # The first sample has the stationary variance, so the clip starts in steady state.
    e[..., 0] /= np.float32(innov)
    return np.asarray(lfilter([1.0], [1.0, -phi], e, axis=-1), dtype=np.float32)


def _response(rng: np.random.Generator, cfg: SynthConfig, prof: _Profiles, ev: _Events) -> F32:
    """What the model hears per (clip, class, frame): lagged events, leaks, false positives."""
    n, k, slots = ev.valid.shape
    t_s, hop = cfg.clip_duration_s, cfg.frame_hop_s
    jit = rng.normal(0.0, cfg.lag_jitter_s, size=(2, n, k, slots))
    start = ev.onset_s + prof.onset_lag_s[:, None] + jit[0]
    end = np.maximum(ev.offset_s + prof.offset_lag_s[:, None] + jit[1], start + hop)
    strength = np.exp(rng.normal(0.0, cfg.event_strength_std, size=(n, k, slots)))
    amp = np.where(ev.valid, strength, 0.0)
    # False-positive bursts, placed anywhere (also partly outside the clip).
    n_fp = np.minimum(rng.poisson(prof.fp_rate, size=(n, k)), MAX_FP_BURSTS)
    fp_slots = int(n_fp.max())
    if fp_slots:
        lo, hi = np.log(cfg.fp_burst_duration_range_s)
        dur = np.exp(rng.uniform(lo, hi, size=(n, k, fp_slots)))
        fp_start = rng.uniform(-dur, t_s)
        fp_amp = rng.uniform(*cfg.fp_burst_strength_range, size=(n, k, fp_slots))
        start = np.concatenate([start, fp_start], axis=-1)
        end = np.concatenate([end, fp_start + dur], axis=-1)
        amp = np.concatenate([amp, np.where(np.arange(fp_slots) < n_fp[..., None], fp_amp, 0.0)], axis=-1)
    # Most (clip, class) pairs of a many-class set are silent: render only the others.
    ci, ki = np.nonzero((amp > 0).any(axis=-1))
    rows = _render(np.clip(start[ci, ki], 0, t_s), np.clip(end[ci, ki], 0, t_s), amp[ci, ki], cfg)
    resp = np.zeros((n, k, cfg.n_frames), dtype=np.float32)
    resp[ci, ki] = _smooth(rows, cfg.response_smoothing_s, hop)
    resp += prof.leak[:, None].astype(np.float32) * resp[:, prof.leak_src, :]
    return resp


def _scores(rng: np.random.Generator, cfg: SynthConfig, prof: _Profiles, ev: _Events) -> F32:
    """Probabilities of a chunk, shape (clips, frames, classes), float32 in [0, 1]."""
    n, k, _ = ev.valid.shape
    logit = _response(rng, cfg, prof, ev)
    logit *= prof.gain[:, None].astype(np.float32)
    offset = prof.bias + rng.normal(0.0, cfg.clip_offset_std_logit, size=(n, k))
    logit += offset[..., None].astype(np.float32)
    logit += _ar1_noise(rng, cfg, logit.shape)
    probs = np.asarray(expit(logit), dtype=np.float32)
    return probs.transpose(0, 2, 1)


def _gt_text(names: list[str], classes: list[str], ev: _Events) -> tuple[str, int]:
    """Ground-truth rows of a chunk, clip by clip (events by onset), and the event count.

    A clip without events gets one empty-label row at its place in the clip order.
    """
    c, k, s = np.nonzero(ev.valid)
    on, off = ev.onset_s[c, k, s], ev.offset_s[c, k, s]
    label_rank = np.argsort(np.argsort(np.asarray(classes)))
    has = np.zeros(len(names), dtype=bool)
    has[c] = True
    blank = np.flatnonzero(~has)
    clip = np.concatenate([c, blank])
    key_on = np.concatenate([on, np.full(len(blank), -1.0)])
    key_off = np.concatenate([off, np.full(len(blank), -1.0)])
    key_lab = np.concatenate([label_rank[k], np.zeros(len(blank), dtype=np.int64)])
    order = np.lexsort((key_lab, key_off, key_on, clip))
    n_ev = len(c)
    lines = [
        f"{names[clip[i]]}\t{key_on[i]:.3f}\t{key_off[i]:.3f}\t{classes[k[i]]}\n"
        if i < n_ev
        else f"{names[clip[i]]}\t\t\t\n"
        for i in order.tolist()
    ]
    return "".join(lines), n_ev


def _open_text(fs: pafs.FileSystem, path: str, header: str) -> IO[bytes]:
    stream: IO[bytes] = fs.open_output_stream(path, compression=None)
    stream.write(header.encode())
    return stream


def _prepare_out_dir(out_dir: str, overwrite: bool) -> tuple[pafs.FileSystem, str]:
    """Create out_dir; refuse (or, with overwrite, clear) shards left by an earlier run."""
    fs, root = resolve(out_dir)
    if fs.get_file_info(root).type == pafs.FileType.File:
        raise SedtuneInputError(f"{out_dir}: is a file; synth writes into a directory")
    if not overwrite:
        # Never replace a user's own ground truth or durations.
        for name in ("ground_truth.tsv", "durations.tsv"):
            if fs.get_file_info(f"{root}/{name}").type != pafs.FileType.NotFound:
                raise SedtuneInputError(
                    f"{out_dir}/{name} already exists; choose an empty out_dir or pass overwrite=True"
                )
    fs.create_dir(root, recursive=True)
    scores = f"{root}/scores"
    if fs.get_file_info(scores).type == pafs.FileType.Directory:
        old = [i.path for i in fs.get_file_info(pafs.FileSelector(scores)) if i.path.endswith(".parquet")]
        if old and not overwrite:
            # Stale shards would join the new set and corrupt it.
            raise SedtuneInputError(
                f"{out_dir}/scores already holds {len(old)} shard(s); choose an empty "
                "out_dir or pass overwrite=True"
            )
        for path in old:
            fs.delete_file(path)
    return fs, root


def generate(
    out_dir: str,
    config: SynthConfig,
    progress: Callable[[int], None] | None = None,
    *,
    overwrite: bool = False,
) -> SynthResult:
    """Write a synthetic score set and its ground truth, streaming chunk by chunk.

    Writes ``out_dir/scores/`` (Parquet shards), ``out_dir/ground_truth.tsv`` and
    ``out_dir/durations.tsv``. Clips are named ``synth_000000.wav``, ``synth_000001.wav``, ...

    Args:
        out_dir: Output directory (local path or pyarrow filesystem URI), created if missing.
        config: What to generate.
        progress: Called with the number of clips just written, after every chunk.
        overwrite: Delete Parquet shards already in ``out_dir/scores`` instead of refusing.

    Returns:
        Where the files are and what they hold.

    Raises:
        SedtuneInputError: If ``out_dir/scores`` holds shards and ``overwrite`` is False.
    """
    fs, root = _prepare_out_dir(out_dir, overwrite)
    classes = config.classes
    prof = _profiles(config)
    scores_uri = f"{out_dir.rstrip('/')}/scores"
    LOG.info(
        "synth: %d clips x %d classes x %d frames into %s (seed %d)",
        config.n_clips,
        len(classes),
        config.n_frames,
        out_dir,
        config.seed,
    )
    writer = ScoreSetWriter(scores_uri, classes, config.frame_hop_s, config.clips_per_shard)
    n_events = 0
    step = config.chunk_clips
    gt = _open_text(fs, f"{root}/ground_truth.tsv", "filename\tonset\toffset\tevent_label\n")
    dur = _open_text(fs, f"{root}/durations.tsv", "filename\tduration\n")
    try:
        for chunk, first in enumerate(range(0, config.n_clips, step)):
            n = min(step, config.n_clips - first)
            rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1, chunk)))
            ev = _sample_events(rng, config, prof, n)
            probs = _scores(rng, config, prof, ev)
            names = [f"synth_{i:06d}.wav" for i in range(first, first + n)]
            for name, mat in zip(names, probs, strict=True):
                writer.add(name, mat)
            text, n_ev = _gt_text(names, classes, ev)
            gt.write(text.encode())
            dur.write("".join(f"{x}\t{config.clip_duration_s:.3f}\n" for x in names).encode())
            n_events += n_ev
            if progress is not None:
                progress(n)
        writer.close()
    finally:
        gt.close()
        dur.close()
    LOG.info("synth: wrote %d clips, %d events, %d shards", writer.n_clips, n_events, writer.n_shards)
    return SynthResult(
        scores_uri=scores_uri,
        ground_truth_path=f"{out_dir.rstrip('/')}/ground_truth.tsv",
        durations_path=f"{out_dir.rstrip('/')}/durations.tsv",
        n_clips=writer.n_clips,
        n_events=n_events,
        classes=classes,
    )
