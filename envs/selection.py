"""Turning evaluated candidates into a recommendation: naive and robust selection.

Tuned thresholds that only fit the tuning clips are not a result (DESIGN.md,
"Generalization"): the per-class optimum on the tuning clips gains several points there and
little on held-out clips. Selection therefore works per class (the objective is separable)
from the candidates a strategy evaluated, each with its counts per cross-validation fold of
the tuning clips:

- **naive**: the candidate with the best F on all tuning clips;
- **robust** (default):
  1. *smoothing*: a candidate's score is the mean F of the candidates with the same decoder,
     box setting, gap and minimum-duration setting whose threshold lies within ±w of its own,
     whose kernel is within ±kw positions of its own in the sorted kernel list (the step
     filter's length for ``boxes``) and, for ``boxes`` with a single merge criterion, whose
     criterion value is within ±mw positions of its own among the values of that criterion
     (a smoothed F surface over threshold x kernel x merge criterion);
  2. *cross-validated smoothing*: (w, kw, mw) is chosen among ``widths`` x ``kernel_widths``
     x ``merge_widths`` by
     K-fold cross-validation over the tuning folds: select on K-1 folds, count on the
     left-out fold, pool the counts over folds, and keep the pair with the best pooled
     macro F (ties go to more smoothing);
  3. *shrinkage* (off by default): per class, if the selection procedure does not beat the
     manual setting in cross-validation (mean fold gain below ``shrink_z`` standard errors),
     the class keeps the manual setting.

Measured on the shared DESED outputs (tests/benchmarks/bench_strategies.py, 5 seeded 50/50
splits, exact at 200 evaluations): naive +1.51 / +2.62 held-out points over manual
(dcase2021-student / dcase2020); threshold smoothing with shrinkage at z=1 +1.15 / +1.33
(shrinkage gave away real gains); cross-validated threshold x kernel smoothing without
shrinkage +1.81 / +3.16. Hence the defaults. Smoothing over neighbouring merge criteria too
(``merge_widths`` (0, 1), on the default two-decoder space, same protocol): held-out macro F1
0.4819 / 0.4308 / 0.4756 (dcase2021-student / dcase2020 / dcase2021-teacher) against 0.4814 /
0.4318 / 0.4728 without, and 0.4806 / 0.4337 / 0.4774 against 0.4801 / 0.4332 / 0.4752 on ten
other splits (seeds 5-14). (The figures of this paragraph were measured on the splits jobs
drew before :func:`envs.split.split_names`, over the ground-truth file's row order.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from envs.metrics.fscore import f_measure, macro_f_of_totals
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


class _Geometry:
    """Where every candidate of a class sits for smoothing: group, two ordered axes, threshold.

    A group holds the candidates that differ only in threshold and in the ordered stages
    smoothed over: the median-filter kernel for ``frames`` candidates; for ``boxes``
    candidates (same box median filter and confidence) the step-filter length and, when the
    candidate merges by one criterion only (absolute or relative), that criterion's value (a
    second axis; candidates with both criteria or none keep them in the group). Gap, minimum
    duration and hysteresis are part of the group. A *row* is one (group, axis position, merge
    position), its candidates sorted by threshold. The smoothing windows depend on this
    geometry and on the widths only, not on the counts, so they are built once per
    (width, kernel_width, merge_width) and reused for every fold and every rule's pick.

    Args:
        cands: The class's candidates.
    """

    def __init__(self, cands: Sequence[Candidate]) -> None:
        keys: dict[tuple[object, ...], int] = {}
        kernels = sorted({c.params.median_filter_frames for c in cands if c.params.decoder == "frames"})
        steps = sorted({c.params.step_filter_s or 0.0 for c in cands if c.params.decoder == "boxes"})
        kpos = {k: i for i, k in enumerate(kernels)}
        spos = {v: i for i, v in enumerate(steps)}
        merges: dict[str, dict[float, int]] = {}
        for kind in ("abs", "rel"):
            values = {_single_merge(c.params, kind) for c in cands} - {None}
            merges[kind] = {v: i for i, v in enumerate(sorted(v for v in values if v is not None))}
        gid = np.empty(len(cands), np.int64)
        kid = np.empty(len(cands), np.int64)
        mid = np.zeros(len(cands), np.int64)
        thr = np.empty(len(cands), np.float64)
        for i, c in enumerate(cands):
            p = c.params
            if p.decoder == "boxes":
                kid[i] = spos[p.step_filter_s or 0.0]
                if (v := _single_merge(p, "abs")) is not None:
                    merge: tuple[object, ...] = ("abs",)
                    mid[i] = merges["abs"][v]
                elif (v := _single_merge(p, "rel")) is not None:
                    merge = ("rel",)
                    mid[i] = merges["rel"][v]
                else:
                    merge = (p.merge_abs, p.merge_rel)
                key: tuple[object, ...] = ("boxes", p.median_filter_frames, *merge, p.confidence)
            else:
                key = ("frames", p.threshold_off)
                kid[i] = kpos[p.median_filter_frames]
            gid[i] = keys.setdefault((*key, p.fill_gap_s, p.min_duration_s), len(keys))
            thr[i] = p.threshold
        self.thr = thr
        # Candidates by (group, axis position, merge position, threshold); equal thresholds
        # keep their order.
        self.order = np.lexsort((thr, mid, kid, gid)).astype(np.int64)
        self.sorted_thr = thr[self.order]
        g_s, k_s, m_s = gid[self.order], kid[self.order], mid[self.order]
        cut = np.flatnonzero((np.diff(g_s) != 0) | (np.diff(k_s) != 0) | (np.diff(m_s) != 0)) + 1
        starts = np.concatenate(([0], cut)).astype(np.int64)
        ends = np.concatenate((cut, [len(cands)])).astype(np.int64)
        #: (group, axis position, merge position) -> [start, end) of its row in sorted positions.
        self.rows = {
            (int(g_s[s]), int(k_s[s]), int(m_s[s])): (int(s), int(e))
            for s, e in zip(starts, ends, strict=True)
        }
        self._windows: dict[tuple[float, int, int], tuple[I64, I64]] = {}

    def windows(self, width: float, kernel_width: int, merge_width: int = 0) -> tuple[I64, I64]:
        """Per offset (dk, dm) in ``-kernel_width..kernel_width`` x ``-merge_width..merge_width``
        and candidate (original index), the sorted positions [lo, hi) of the same-group
        candidates at axis position k + dk and merge position m + dm with a threshold within
        ±width (both ends inclusive, 1e-12 of slack); lo = hi = 0 where that row does not exist.

        Returns:
            (lo, hi), each of shape ((2 * kernel_width + 1) * (2 * merge_width + 1), candidates).
        """
        hit = self._windows.get((width, kernel_width, merge_width))
        if hit is not None:
            return hit
        offsets = [
            (dk, dm)
            for dk in range(-kernel_width, kernel_width + 1)
            for dm in range(-merge_width, merge_width + 1)
        ]
        lo = np.zeros((len(offsets), len(self.thr)), np.int64)
        hi = np.zeros((len(offsets), len(self.thr)), np.int64)
        for (g, k, m), (a, b) in self.rows.items():
            mine = self.order[a:b]
            t = self.sorted_thr[a:b]
            for j, (dk, dm) in enumerate(offsets):
                row = self.rows.get((g, k + dk, m + dm))
                if row is None:
                    continue
                ra, rb = row
                rt = self.sorted_thr[ra:rb]
                lo[j, mine] = ra + np.searchsorted(rt, t - width - 1e-12, side="left")
                hi[j, mine] = ra + np.searchsorted(rt, t + width + 1e-12, side="right")
        self._windows[(width, kernel_width, merge_width)] = (lo, hi)
        return lo, hi


def _single_merge(p: ClassParams, kind: str) -> float | None:
    """The value of a ``boxes`` candidate's merge criterion ``kind`` ("abs" or "rel") when it
    merges by that criterion alone, else None."""
    if p.decoder != "boxes":
        return None
    if kind == "abs":
        return p.merge_abs if p.merge_rel is None else None
    return p.merge_rel if p.merge_abs is None else None


def _smoothed(f: F64, geo: _Geometry, width: float, kernel_width: int, merge_width: int = 0) -> F64:
    """Mean F of same-group candidates within ±width in threshold, ±kernel_width in kernel and
    ±merge_width in merge criterion."""
    if width <= 0 and kernel_width <= 0 and merge_width <= 0:
        return f
    lo, hi = geo.windows(width, kernel_width, merge_width)
    v = f[geo.order]
    ok = ~np.isnan(v)
    cs = np.concatenate(([0.0], np.cumsum(np.where(ok, v, 0.0))))
    cn = np.concatenate(([0], np.cumsum(ok)))
    sums = (cs[hi] - cs[lo]).sum(axis=0)
    cnts = (cn[hi] - cn[lo]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnts > 0, sums / np.maximum(cnts, 1), np.nan)


def _pick(counts: I64, geo: _Geometry, width: float, kernel_width: int, merge_width: int = 0) -> int:
    """Index of the best smoothed candidate given total counts (n_cands, 3)."""
    f = f_measure(counts[:, 0], counts[:, 1], counts[:, 2])
    s = _smoothed(f, geo, width, kernel_width, merge_width)
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
        kernel_widths: Kernel smoothing half-widths (positions in the sorted kernel list, the
            step-filter lengths for ``boxes``).
        merge_widths: Merge-criterion smoothing half-widths (positions among the values of a
            ``boxes`` candidate's single merge criterion).
        shrink_z: Keep the manual setting for a class unless the cross-validated gain over
            manual is at least this many standard errors (fold to fold); None disables.
    """

    widths: tuple[float, ...] = (0.0, 0.03, 0.06, 0.09, 0.12, 0.18)
    kernel_widths: tuple[int, ...] = (0, 1, 2)
    merge_widths: tuple[int, ...] = (0, 1)
    shrink_z: float | None = None


@dataclass
class SelectionReport:
    """What robust selection decided.

    Attributes:
        width: The chosen threshold smoothing half-width.
        kernel_width: The chosen kernel smoothing half-width.
        merge_width: The chosen merge-criterion smoothing half-width.
        cv_macro_f: Pooled cross-validated macro F per ``"w/kw/mw"`` tried.
        shrunk: Classes that kept the manual setting.
        cv_gain: Per class, mean cross-validated fold gain over manual (F points, 0-1 scale).
    """

    width: float
    kernel_width: int
    merge_width: int
    cv_macro_f: dict[str, float]
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
    prepared = {}
    for c, cl in candidates.items():
        cands = list(cl)
        prepared[c] = (cands, _Geometry(cands), np.stack([x.counts for x in cands]))  # (n, folds, 3)
    n_folds = next(iter(prepared.values()))[2].shape[1]

    # Cross-validated choice of the smoothing (shared by all classes).
    rules = [(w, kw, mw) for w in cfg.widths for kw in cfg.kernel_widths for mw in cfg.merge_widths]
    pooled_by: dict[tuple[float, int, int], dict[str, I64]] = {}
    fold_f_by: dict[tuple[float, int, int], dict[str, F64]] = {}
    for rule in rules:
        pooled, per_fold = {}, {}
        for c, (_, geo, counts) in prepared.items():
            total = counts.sum(axis=1)
            acc = np.zeros(3, np.int64)
            fold_f = np.full(n_folds, np.nan)
            for f in range(n_folds):
                train = total - counts[:, f] if n_folds > 1 else total
                i = _pick(train, geo, *rule)
                acc += counts[i, f]
                fold_f[f] = f_measure(*counts[i, f])
            pooled[c], per_fold[c] = acc, fold_f
        pooled_by[rule], fold_f_by[rule] = pooled, per_fold
    macro = {rule: macro_f_of_totals(pooled_by[rule].values()) for rule in rules}
    # Ties go to more smoothing.
    best = max(rules, key=lambda r: (np.nan_to_num(macro[r], nan=-1.0), r[0], r[1], r[2]))

    out: dict[str, ClassParams] = {}
    report = SelectionReport(*best, {f"{w}/{kw}/{mw}": v for (w, kw, mw), v in macro.items()})
    for c, (cands, geo, counts) in prepared.items():
        chosen = cands[_pick(counts.sum(axis=1), geo, *best)].params
        m = manual[c].counts
        gains = fold_f_by[best][c] - f_measure(m[:, 0], m[:, 1], m[:, 2])
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
