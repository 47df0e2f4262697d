"""The simulated model: events of a chunk of clips and the scores a SED model gives them.

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
  bias is miscalibrated on purpose, so the best threshold is not 0.5 and differs by class; the
  clip offset is per (clip, class), plus, with ``clip_calibration_std_logit``, one per clip
  shared by all classes, so each clip's best thresholds move together (visible in the clip).

Class properties (:func:`class_profiles`) come from ``SeedSequence(seed, spawn_key=(0, class
index))`` and the confusion cycle from ``spawn_key=(2,)``; a chunk's events and scores
(:func:`sample_events`, :func:`chunk_scores`) from the generator it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter
from scipy.special import expit

from envs.synth_config import SynthConfig

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: At most this many false-positive bursts per clip and class.
MAX_FP_BURSTS = 4

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


@dataclass(frozen=True)
class ClassProfiles:
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


def class_profiles(cfg: SynthConfig) -> ClassProfiles:
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
    return ClassProfiles(
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
class ChunkEvents:
    """Events of a chunk in padded slots, shape (clips, classes, slots); seconds."""

    onset_s: F64
    offset_s: F64
    valid: B


def _sample_counts(rng: np.random.Generator, cfg: SynthConfig, prof: ClassProfiles, n: int) -> I64:
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


def sample_events(rng: np.random.Generator, cfg: SynthConfig, prof: ClassProfiles, n: int) -> ChunkEvents:
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
    return ChunkEvents(onset_r, offset_r, valid)


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


def _response(rng: np.random.Generator, cfg: SynthConfig, prof: ClassProfiles, ev: ChunkEvents) -> F32:
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


def chunk_scores(rng: np.random.Generator, cfg: SynthConfig, prof: ClassProfiles, ev: ChunkEvents) -> F32:
    """Probabilities of a chunk, shape (clips, frames, classes), float32 in [0, 1]."""
    n, k, _ = ev.valid.shape
    logit = _response(rng, cfg, prof, ev)
    logit *= prof.gain[:, None].astype(np.float32)
    offset = prof.bias + rng.normal(0.0, cfg.clip_offset_std_logit, size=(n, k))
    if cfg.clip_calibration_std_logit > 0:  # drawn only when asked: earlier sets stay the same
        offset += rng.normal(0.0, cfg.clip_calibration_std_logit, size=(n, 1))
    logit += offset[..., None].astype(np.float32)
    logit += _ar1_noise(rng, cfg, logit.shape)
    probs = np.asarray(expit(logit), dtype=np.float32)
    return probs.transpose(0, 2, 1)
