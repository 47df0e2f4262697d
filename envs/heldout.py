"""Held-out scoring: per-clip counts, macro F, and bootstrap intervals of gains over manual.

A gain is only a result if it holds on clips the tuner never saw. For each split, the
held-out clips' per-class counts are kept per clip, so clip-level bootstrap resamples
(the same resampled clips for both parameter sets: a paired bootstrap) give the
distribution of the macro-F gain over manual. Across several splits the replicate gains are
averaged, giving an interval for the mean gain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from envs.evaluator import Evaluator
from envs.events import ClassEvents
from envs.metrics.event_based import event_counts_by_group
from envs.metrics.fscore import f_measure, macro_f_of_totals
from envs.params import ClassParams

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
ClipCounts = dict[str, I64]  # class -> (n_clips, 3) [nref, nsys, ntp]


def clip_counts(evaluator: Evaluator, params: Mapping[str, ClassParams]) -> ClipCounts:
    """Per class, counts per clip of the evaluator's set."""
    n = len(evaluator.data)
    clips = np.arange(n, dtype=np.int64)
    return {c: evaluator.class_counts_by_group(c, params[c], clips, n) for c in evaluator.data.classes}


def clip_counts_of_events(evaluator: Evaluator, events: Mapping[str, ClassEvents]) -> ClipCounts:
    """Per class, counts per clip for given events (e.g. a clip-adaptive policy's)."""
    n = len(evaluator.data)
    m = evaluator.metric
    clips = np.arange(n, dtype=np.int64)
    return {
        c: event_counts_by_group(
            evaluator.data.refs[c], events[c], clips, n, m.t_collar_s, m.percentage_of_length
        )
        for c in evaluator.data.classes
    }


def macro_f(counts: ClipCounts) -> float:
    """Macro F of the totals (sed_eval semantics)."""
    return macro_f_of_totals(v.sum(axis=0) for v in counts.values())


def class_f(counts: ClipCounts) -> dict[str, float]:
    """Per-class F of the totals."""
    return {c: float(f_measure(*v.sum(axis=0))) for c, v in counts.items()}


def class_figures(counts: ClipCounts) -> dict[str, dict[str, float]]:
    """Per class: f_measure, precision, recall, nref, nsys, ntp of the totals."""
    from envs.metrics.counts import Counts
    from envs.metrics.fscore import precision, recall

    out = {}
    for c, v in counts.items():
        t = v.sum(axis=0) if v.ndim == 2 else v
        k = Counts(int(t[0]), int(t[1]), int(t[2]))
        out[c] = {
            "f_measure": float(f_measure(*t)),
            "precision": precision(k),
            "recall": recall(k),
            "nref": float(k.nref),
            "nsys": float(k.nsys),
            "ntp": float(k.ntp),
        }
    return out


def bootstrap_weights(n_clips: int, n_boot: int, seed: int) -> npt.NDArray[np.float64]:
    """Resampling weights (n_boot, n_clips): how often each clip is drawn."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clips, np.full(n_clips, 1.0 / n_clips), size=n_boot).astype(np.float64)


def replicate_macro_f(counts: ClipCounts, weights: npt.NDArray[np.float64]) -> F64:
    """Macro F of every bootstrap replicate (n_boot,)."""
    per_class = []
    for v in counts.values():
        tot = weights @ v.astype(np.float64)  # (n_boot, 3)
        per_class.append(f_measure(tot[:, 0], tot[:, 1], tot[:, 2]))
    mat = np.stack(per_class, axis=1)
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(mat)
        sums = np.where(valid, mat, 0.0).sum(axis=1)
        n = valid.sum(axis=1)
        return np.where(n > 0, sums / np.maximum(n, 1), np.nan)


@dataclass(frozen=True)
class GainInterval:
    """A gain over manual with its bootstrap interval (macro F, 0-1 scale).

    Attributes:
        gain: Mean over splits of the held-out gain.
        low: 2.5th percentile of the mean replicate gain.
        high: 97.5th percentile.
        significant: Whether the interval lies above zero.
    """

    gain: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """True when the whole interval is above zero."""
        return bool(self.low > 0)


def gain_interval(
    split_counts: Sequence[tuple[ClipCounts, ClipCounts]], n_boot: int, seed: int
) -> GainInterval:
    """Paired bootstrap interval of the mean gain (strategy - manual) over splits.

    Args:
        split_counts: Per split, (strategy counts, manual counts) on its held-out clips.
        n_boot: Resamples.
        seed: Seed of the resampling.
    """
    gains = []
    reps = np.zeros(n_boot)
    for k, (mine, manual) in enumerate(split_counts):
        n = next(iter(mine.values())).shape[0]
        w = bootstrap_weights(n, n_boot, seed + 7919 * k)
        reps += replicate_macro_f(mine, w) - replicate_macro_f(manual, w)
        gains.append(macro_f(mine) - macro_f(manual))
    reps /= len(split_counts)
    lo, hi = np.nanpercentile(reps, [2.5, 97.5])
    return GainInterval(float(np.mean(gains)), float(lo), float(hi))
