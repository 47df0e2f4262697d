"""Turning evaluated candidates into a recommendation: naive and robust selection.

Tuned thresholds that only fit the tuning clips are not a result (DESIGN.md,
"Generalization"): the per-class optimum on the tuning clips gains several points there and
little on held-out clips. Selection therefore works per class (the objective is separable)
from the candidates a strategy evaluated, each with its counts per cross-validation fold of
the tuning clips:

- **naive**: the candidate with the best F on all tuning clips;
- **robust** (default):
  1. *smoothing*: a candidate's score is the mean F of the candidates of the same discrete
     setting whose threshold lies within ±w of its own (a smoothed F-vs-threshold curve);
  2. *cross-validated width*: w is chosen among ``widths`` by K-fold cross-validation over
     the tuning folds: select on K-1 folds, count on the left-out fold, pool the counts
     over folds, and keep the w with the best pooled macro F (ties go to the wider w);
  3. *shrinkage*: per class, if the selection procedure does not beat the manual setting
     in cross-validation (mean fold gain below ``shrink_z`` standard errors), the class
     keeps the manual setting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from envs.params import ClassParams

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Candidate:
    """One per-class setting a strategy evaluated.

    Attributes:
        params: The class's parameters.
        counts: Array (n_folds, 3) of [nref, nsys, ntp] per tuning fold.
    """

    params: ClassParams
    counts: I64


def f_measure(nref: npt.ArrayLike, nsys: npt.ArrayLike, ntp: npt.ArrayLike) -> F64:
    """Vectorized sed_eval class F (zero_score; NaN where nref == 0)."""
    nref_a = np.asarray(nref, np.float64)
    nsys_a = np.asarray(nsys, np.float64)
    ntp_a = np.asarray(ntp, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(nsys_a > 0, ntp_a / np.where(nsys_a > 0, nsys_a, 1), 0.0)
        r = np.where(nref_a > 0, ntp_a / np.where(nref_a > 0, nref_a, 1), np.nan)
        f = np.where((p == 0) & (r == 0), 0.0, 2.0 * p * r / (p + r))
    return np.asarray(f, np.float64)


def select_naive(cands: Sequence[Candidate]) -> Candidate:
    """The candidate with the best F on all tuning clips (first on ties)."""
    tot = np.stack([c.counts.sum(axis=0) for c in cands])
    f = f_measure(tot[:, 0], tot[:, 1], tot[:, 2])
    return cands[int(np.nanargmax(f))] if not np.isnan(f).all() else cands[0]


def _groups(cands: Sequence[Candidate]) -> tuple[I64, F64]:
    keys: dict[tuple[int, float, float, float | None], int] = {}
    gid = np.empty(len(cands), np.int64)
    thr = np.empty(len(cands), np.float64)
    for i, c in enumerate(cands):
        p = c.params
        key = (p.median_filter_frames, p.fill_gap_s, p.min_duration_s, p.threshold_off)
        gid[i] = keys.setdefault(key, len(keys))
        thr[i] = p.threshold
    return gid, thr


def _smoothed(f: F64, gid: I64, thr: F64, width: float) -> F64:
    """Mean F of same-group candidates within ±width of each threshold (NaN-aware)."""
    if width <= 0:
        return f
    out = np.empty_like(f)
    for g in np.unique(gid):
        idx = np.flatnonzero(gid == g)
        order = idx[np.argsort(thr[idx], kind="stable")]
        t = thr[order]
        v = f[order]
        ok = ~np.isnan(v)
        cs = np.concatenate(([0.0], np.cumsum(np.where(ok, v, 0.0))))
        cn = np.concatenate(([0], np.cumsum(ok)))
        lo = np.searchsorted(t, t - width - 1e-12, side="left")
        hi = np.searchsorted(t, t + width + 1e-12, side="right")
        n = cn[hi] - cn[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[order] = np.where(n > 0, (cs[hi] - cs[lo]) / np.maximum(n, 1), np.nan)
    return out


def _pick(counts: I64, gid: I64, thr: F64, width: float) -> int:
    """Index of the best smoothed candidate given total counts (n_cands, 3)."""
    f = f_measure(counts[:, 0], counts[:, 1], counts[:, 2])
    s = _smoothed(f, gid, thr, width)
    if np.isnan(s).all():
        return 0
    best = np.nanmax(s)
    # Among (near-)ties prefer the higher raw F, then the first.
    tied = np.flatnonzero(s >= best - 1e-12)
    return int(tied[np.nanargmax(np.where(np.isnan(f[tied]), -1.0, f[tied]))])


@dataclass(frozen=True)
class RobustConfig:
    """Settings of robust selection.

    Attributes:
        widths: Threshold smoothing half-widths tried by cross-validation.
        shrink_z: Keep the manual setting for a class unless the cross-validated gain over
            manual is at least this many standard errors (fold to fold); None disables.
    """

    widths: tuple[float, ...] = (0.0, 0.025, 0.05, 0.1, 0.15)
    shrink_z: float | None = 1.0


@dataclass
class SelectionReport:
    """What robust selection decided.

    Attributes:
        width: The chosen smoothing half-width.
        cv_macro_f: Pooled cross-validated macro F per width tried.
        shrunk: Classes that kept the manual setting.
        cv_gain: Per class, mean cross-validated fold gain over manual (F points, 0-1 scale).
    """

    width: float
    cv_macro_f: dict[float, float]
    shrunk: list[str] = field(default_factory=list)
    cv_gain: dict[str, float] = field(default_factory=dict)


def select_robust(
    candidates: Mapping[str, Sequence[Candidate]],
    manual: Mapping[str, Candidate],
    config: RobustConfig | None = None,
) -> tuple[dict[str, ClassParams], SelectionReport]:
    """Robust per-class selection (see module docstring).

    Args:
        candidates: Per class, the evaluated candidates (all with the same number of folds).
        manual: Per class, the manual setting with its fold counts.
        config: Widths and shrinkage.

    Returns:
        The recommended parameters per class and a report.
    """
    cfg = config or RobustConfig()
    classes = list(candidates)
    prepared = {}
    for c in classes:
        cands = list(candidates[c])
        gid, thr = _groups(cands)
        counts = np.stack([x.counts for x in cands])  # (n_cands, n_folds, 3)
        prepared[c] = (cands, gid, thr, counts)
    n_folds = next(iter(prepared.values()))[3].shape[1]

    # Cross-validated choice of the smoothing width (shared by all classes).
    cv_pooled: dict[float, dict[str, I64]] = {}
    cv_fold_f: dict[float, dict[str, F64]] = {}
    for w in cfg.widths:
        pooled, per_fold = {}, {}
        for c, (_, gid, thr, counts) in prepared.items():
            total = counts.sum(axis=1)
            acc = np.zeros(3, np.int64)
            fold_f = np.full(n_folds, np.nan)
            for f in range(n_folds):
                i = _pick(total - counts[:, f], gid, thr, w) if n_folds > 1 else _pick(total, gid, thr, w)
                acc += counts[i, f]
                fold_f[f] = f_measure(*counts[i, f])
            pooled[c], per_fold[c] = acc, fold_f
        cv_pooled[w], cv_fold_f[w] = pooled, per_fold
    macro = {w: _macro(cv_pooled[w]) for w in cfg.widths}
    width = max(cfg.widths, key=lambda w: (np.nan_to_num(macro[w], nan=-1.0), w))

    out: dict[str, ClassParams] = {}
    report = SelectionReport(width, macro)
    for c, (cands, gid, thr, counts) in prepared.items():
        chosen = cands[_pick(counts.sum(axis=1), gid, thr, width)].params
        m = manual[c].counts
        gains = cv_fold_f[width][c] - f_measure(m[:, 0], m[:, 1], m[:, 2])
        gains = gains[~np.isnan(gains)]
        mean_gain = float(gains.mean()) if len(gains) else 0.0
        report.cv_gain[c] = mean_gain
        if cfg.shrink_z is not None and n_folds > 1:
            se = float(gains.std(ddof=1) / math.sqrt(len(gains))) if len(gains) > 1 else math.inf
            if not mean_gain > cfg.shrink_z * se:
                chosen = manual[c].params
                report.shrunk.append(c)
        out[c] = chosen
    return out, report


def _macro(pooled: Mapping[str, I64]) -> float:
    f = [float(f_measure(*v)) for v in pooled.values()]
    arr = np.array(f)
    return float(np.nanmean(arr)) if not np.isnan(arr).all() else math.nan
