"""Unit tests of the honesty core: robust selection, the paired bootstrap and the recommendation.

The three pieces that decide whether a tuning result is reported as a gain:

- :func:`envs.selection.select_robust` prefers a broad plateau of good settings over an
  isolated spike, chooses its smoothing by cross-validation over the tuning folds and can
  shrink a class back to manual;
- :func:`envs.heldout.gain_interval` gives a *paired* bootstrap interval of the held-out
  macro-F gain over manual, and :attr:`envs.heldout.GainInterval.significant` requires the
  whole interval above zero;
- :func:`service.tuning.runner.recommend` states a gain only when it is significant.

Every input is small and hand-built so that the expected answer can be worked out on paper
(the numbers are in the comments). ``tests/mutants.py`` breaks each piece on purpose and
checks that these tests fail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.heldout import (
    ClipCounts,
    GainInterval,
    bootstrap_weights,
    gain_interval,
    macro_f,
    replicate_macro_f,
)
from envs.metrics.fscore import f_measure
from envs.params import ClassParams
from envs.selection import Candidate, RobustConfig, select_robust
from service.tuning.runner import Row, recommend

I64 = npt.NDArray[np.int64]

# ---------------------------------------------------------------------------------------------
# Robust selection
# ---------------------------------------------------------------------------------------------

N_REF = 100  # reference events per tuning fold (the same for every candidate)
THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 19)]  # 0.05 .. 0.90
PLATEAU = (0.30, 0.60)  # F 0.70 on every fold
SPIKE = 0.80  # F 1.00 on fold 0 only, 0.62 elsewhere: total 0.715, the best tuning F
LOW_TP = 30  # everything else: F 0.30
SPIKE_TP = (100, 62, 62, 62)
PLATEAU_TP = 70


def _cand(params: ClassParams, tp: Sequence[int], nref: int = N_REF) -> Candidate:
    """A candidate with ``nsys == nref`` per fold (so fold F = tp / nref)."""
    counts = np.array([[nref, nref, t] for t in tp], dtype=np.int64)
    return Candidate(params, counts)


def _threshold_tp(thr: float) -> tuple[int, ...]:
    """Per-fold true positives of the plateau-vs-spike surface over the threshold."""
    if thr == SPIKE:
        return SPIKE_TP
    if PLATEAU[0] <= thr <= PLATEAU[1]:
        return (PLATEAU_TP,) * 4
    return (LOW_TP,) * 4


def _plateau_and_spike() -> list[Candidate]:
    """One frames group (kernel 1) over 18 thresholds: a plateau 0.30-0.60 and a spike at 0.80."""
    return [_cand(ClassParams(threshold=t), _threshold_tp(t)) for t in THRESHOLDS]


def _manual(tp: Sequence[int] = (50, 50, 50, 50)) -> Candidate:
    """The manual setting (threshold 0.5, kernel 1) with the given per-fold true positives."""
    return _cand(ClassParams(threshold=0.5), tp)


def _total_f(c: Candidate) -> float:
    """F of a candidate on all tuning clips (what naive selection maximizes)."""
    return float(f_measure(*c.counts.sum(axis=0)))


def _naive(cands: Sequence[Candidate]) -> ClassParams:
    """Naive selection: the best F on all tuning clips."""
    return max(cands, key=_total_f).params


def test_fixture_spike_is_the_naive_pick() -> None:
    """The spike really is the best tuning F (0.715 > 0.70): naive selection takes it."""
    cands = _plateau_and_spike()
    assert _naive(cands).threshold == SPIKE
    assert _total_f(cands[THRESHOLDS.index(SPIKE)]) == pytest.approx(0.715)
    assert _total_f(cands[THRESHOLDS.index(0.45)]) == pytest.approx(0.70)


def test_robust_takes_the_plateau_over_the_spike_at_fixed_width() -> None:
    """With threshold smoothing ±0.1 the spike scores (4 x 0.30 + 0.715) / 5 = 0.38, the plateau 0.70."""
    cands = _plateau_and_spike()
    cfg = RobustConfig(widths=(0.1,), kernel_widths=(0,))
    out, report = select_robust({"Dog": cands}, {"Dog": _manual()}, cfg)
    thr = out["Dog"].threshold
    assert PLATEAU[0] <= thr <= PLATEAU[1], thr
    assert thr != _naive(cands).threshold
    assert report.width == 0.1
    assert report.shrunk == []


def test_robust_default_chooses_smoothing_by_cv_and_takes_the_plateau_centre() -> None:
    """Cross-validation over the folds exposes the spike as fold-0 luck.

    Unsmoothed (w = 0), leaving fold 0 out picks the plateau (0.70 > 0.62 on folds 1-3) and
    leaving any other fold out picks the spike (0.747 on the rest), which then scores 0.62:
    pooled 256/400 = 0.64. Smoothed with w >= 0.06 every fold picks the plateau: 0.70. Ties go
    to more smoothing, so w = 0.18, and only the plateau centre 0.45 has all its ±0.18
    neighbours (0.30-0.60) on the plateau.
    """
    cands = _plateau_and_spike()
    out, report = select_robust({"Dog": cands}, {"Dog": _manual()})
    assert out["Dog"].threshold == 0.45
    assert report.width == pytest.approx(0.18)
    assert report.cv_macro_f["0.0/0/0"] == pytest.approx(0.64)
    assert report.cv_macro_f["0.18/0/0"] == pytest.approx(0.70)
    assert report.cv_gain["Dog"] == pytest.approx(0.20)  # 0.70 - 0.50 on every fold
    assert report.shrunk == []


KERNELS = (1, 3, 5, 7, 9, 11, 13)
KERNEL_SPIKE = 3
KERNEL_PLATEAU = (7, 9, 11)


def _kernel_tp(k: int) -> tuple[int, ...]:
    """Per-fold true positives over the kernel axis: spike at 3, plateau 7-11."""
    if k == KERNEL_SPIKE:
        return SPIKE_TP
    if k in KERNEL_PLATEAU:
        return (PLATEAU_TP,) * 4
    return (LOW_TP,) * 4


def test_robust_smooths_over_neighbouring_kernels() -> None:
    """At one threshold, kernel smoothing ±1 position: the spike kernel 3 scores (0.3 + 0.715 + 0.3) / 3,
    the middle of the kernel plateau (9) scores 0.70."""
    cands = [_cand(ClassParams(median_filter_frames=k, threshold=0.5), _kernel_tp(k)) for k in KERNELS]
    assert _naive(cands).median_filter_frames == KERNEL_SPIKE
    cfg = RobustConfig(widths=(0.0,), kernel_widths=(1,))
    out, _ = select_robust({"Dog": cands}, {"Dog": _manual()}, cfg)
    assert out["Dog"].median_filter_frames == 9


MERGE_ABS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6)
MERGE_SPIKE = 0.15
MERGE_PLATEAU = (0.3, 0.4, 0.5)


def _merge_tp(v: float) -> tuple[int, ...]:
    """Per-fold true positives over the absolute merge criterion: spike at 0.15, plateau 0.3-0.5."""
    if v == MERGE_SPIKE:
        return SPIKE_TP
    if v in MERGE_PLATEAU:
        return (PLATEAU_TP,) * 4
    return (LOW_TP,) * 4


def _box(threshold: float = 0.5, **merge: float) -> ClassParams:
    return ClassParams(threshold=threshold, decoder="boxes", step_filter_s=0.48, **merge)  # type: ignore[arg-type]


def test_robust_smooths_over_neighbouring_merge_criteria() -> None:
    """At one threshold and step filter, merge smoothing ±1 position among the absolute criteria:
    the spike (0.15) scores (0.3 + 0.715 + 0.3) / 3, the middle of the plateau (0.4) 0.70."""
    cands = [_cand(_box(merge_abs=v), _merge_tp(v)) for v in MERGE_ABS]
    assert _naive(cands).merge_abs == MERGE_SPIKE
    out, report = select_robust({"Dog": cands}, {"Dog": _manual()}, RobustConfig((0.0,), (0,), (1,)))
    assert out["Dog"].merge_abs == 0.4 and report.merge_width == 1
    # Without merge smoothing the spike stays the pick.
    out, _ = select_robust({"Dog": cands}, {"Dog": _manual()}, RobustConfig((0.0,), (0,), (0,)))
    assert out["Dog"].merge_abs == MERGE_SPIKE


def test_merge_smoothing_keeps_the_criteria_apart() -> None:
    """A relative criterion is no neighbour of an absolute one, nor a joint one of either: a lone
    spike in each family is scored on its own F, so the best one (rel, F 0.715) is picked."""
    cands = [_cand(_box(merge_abs=v), (LOW_TP,) * 4) for v in MERGE_ABS]
    cands.append(_cand(_box(merge_rel=2.0), SPIKE_TP))
    cands.append(_cand(_box(merge_abs=0.2, merge_rel=2.0), (PLATEAU_TP - 2,) * 4))
    out, _ = select_robust({"Dog": cands}, {"Dog": _manual()}, RobustConfig((0.0,), (0,), (1,)))
    assert (out["Dog"].merge_abs, out["Dog"].merge_rel) == (None, 2.0)


def _noisy_class() -> tuple[list[Candidate], Candidate]:
    """A class whose only alternative is no better than manual in cross-validation.

    Candidate fold F 0.66 / 0.55 / 0.62 / 0.58 (total 0.6025) vs manual 0.60 on every fold:
    fold gains +0.06 / -0.05 / +0.02 / -0.02, mean 0.0025 with a standard error of 0.024.
    """
    cand = _cand(ClassParams(threshold=0.4), (66, 55, 62, 58))
    return [cand], _manual((60, 60, 60, 60))


def test_shrinkage_keeps_manual_where_the_cv_gain_is_noise() -> None:
    """With shrink_z = 1, the noisy class keeps manual and the clear class keeps its plateau pick."""
    noisy, noisy_manual = _noisy_class()
    cands = {"Dog": _plateau_and_spike(), "Cat": noisy}
    manual = {"Dog": _manual(), "Cat": noisy_manual}

    out, report = select_robust(cands, manual, RobustConfig(shrink_z=1.0))
    assert out["Cat"] == noisy_manual.params
    assert report.shrunk == ["Cat"]
    assert report.cv_gain["Cat"] == pytest.approx(0.0025)
    assert out["Dog"].threshold == 0.45  # +0.20 on every fold: not shrunk

    # Shrinkage is what keeps manual: without it, the candidate (tuning F 0.6025 > 0.60) is taken.
    plain, plain_report = select_robust(cands, manual)
    assert plain["Cat"] == noisy[0].params
    assert plain_report.shrunk == []


@st.composite
def _random_class(draw: st.DrawFn) -> list[Candidate]:
    """Candidates over distinct thresholds with random per-fold true positives (3 folds)."""
    n = draw(st.integers(1, 12))
    tps = draw(st.lists(st.tuples(*[st.integers(0, 20)] * 3), min_size=n, max_size=n))
    return [_cand(ClassParams(threshold=THRESHOLDS[i]), tp, nref=20) for i, tp in enumerate(tps)]


@settings(max_examples=60, derandomize=True, deadline=None)
@given(_random_class())
def test_without_smoothing_robust_is_the_best_tuning_f(cands: list[Candidate]) -> None:
    """With the single rule w = 0, kw = 0 and no shrinkage, robust reduces to the best tuning F."""
    cfg = RobustConfig(widths=(0.0,), kernel_widths=(0,))
    out, _ = select_robust({"Dog": cands}, {"Dog": cands[0]}, cfg)
    chosen = next(c for c in cands if c.params == out["Dog"])
    assert _total_f(chosen) == pytest.approx(max(_total_f(c) for c in cands), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# The paired bootstrap of the held-out gain
# ---------------------------------------------------------------------------------------------

N_BOOT = 2000


def _clips(tp: Sequence[int], nref: int) -> I64:
    """Per-clip counts ``[nref, nsys, ntp]`` with ``nsys == nref`` on every clip."""
    return np.array([[nref, nref, t] for t in tp], dtype=np.int64)


def _pair(strategy_tp: Sequence[int], manual_tp: Sequence[int], nref: int) -> tuple[ClipCounts, ClipCounts]:
    """One split's (strategy, manual) held-out counts of one class."""
    return {"Dog": _clips(strategy_tp, nref)}, {"Dog": _clips(manual_tp, nref)}


def _heterogeneous_pair(extra: int) -> tuple[ClipCounts, ClipCounts]:
    """40 clips of 10 events: 20 easy (manual finds 9) and 20 hard (manual finds 1).

    The strategy finds ``extra`` more on every clip. As nsys == nref, F = ntp / nref on any
    resample, so the gain of a paired replicate is exactly ``extra / 10`` whichever clips are
    drawn, while manual's F alone swings with the share of easy clips (bootstrap sd 0.063).
    """
    manual = [9] * 20 + [1] * 20
    return _pair([t + extra for t in manual], manual, nref=10)


def test_bootstrap_weights_draw_n_clips_per_replicate_deterministically() -> None:
    """Each replicate draws n clips with replacement; the same seed gives the same draws."""
    w = bootstrap_weights(7, 50, seed=3)
    assert w.shape == (50, 7)
    assert np.all(w.sum(axis=1) == 7)
    assert np.all(w >= 0)
    assert np.array_equal(w, bootstrap_weights(7, 50, seed=3))
    assert not np.array_equal(w, bootstrap_weights(7, 50, seed=4))


def test_replicate_of_unit_weights_is_the_macro_f() -> None:
    """Weights of one per clip reproduce the macro F; a class without references drops out."""
    counts = {
        "Dog": np.array([[3, 2, 2], [1, 4, 1]], np.int64),
        "Cat": np.array([[0, 1, 0], [0, 0, 0]], np.int64),  # no reference: NaN, drops out
        "Car": np.array([[2, 0, 0], [2, 2, 1]], np.int64),
    }
    reps = replicate_macro_f(counts, np.ones((3, 2)))
    assert reps == pytest.approx([macro_f(counts)] * 3)
    assert macro_f(counts) == pytest.approx((2 * 3 / 10 + 2 * 1 / 6) / 2)


def test_equal_totals_interval_covers_zero_and_is_not_significant() -> None:
    """Per clip the two differ (+1 on 20 clips, -1 on 20) but the totals are equal: gain 0."""
    pair = _pair([4] * 20 + [2] * 20, [3] * 40, nref=5)
    g = gain_interval([pair], N_BOOT, seed=0)
    assert g.gain == pytest.approx(0.0, abs=1e-12)
    assert g.low < 0 < g.high
    assert not g.significant


def test_clear_gain_is_significant() -> None:
    """+1 found event on each of 40 clips of 5 events, F 0.60 -> 0.80: the whole interval is above 0."""
    pair = _pair([4] * 40, [3] * 40, nref=5)
    g = gain_interval([pair], N_BOOT, seed=0)
    assert g.gain == pytest.approx(0.20)
    assert 0 < g.low <= g.gain <= g.high
    assert g.significant


def test_small_noisy_gain_is_not_significant_and_the_interval_is_calibrated() -> None:
    """A +0.01 gain from +1 on 21 clips and -1 on 19 clips (5 events each).

    Replicate gain = sum(w * d) / 200 with d = ±1 per clip and sum(w) = 40: its bootstrap sd is
    sqrt(40 * 0.9975) / 200 = 0.0316, so the 95% interval is about ±0.062 wide around +0.01:
    the gain is positive, the interval covers 0, and the gain is not significant.
    """
    pair = _pair([4] * 21 + [2] * 19, [3] * 40, nref=5)
    g = gain_interval([pair], N_BOOT, seed=0)
    assert g.gain == pytest.approx(0.01)
    assert g.low < 0 < g.gain < g.high
    assert not g.significant
    assert 0.09 < g.high - g.low < 0.16  # 2 x 1.96 x 0.0316 = 0.124


def test_pairing_makes_a_constant_gain_exact() -> None:
    """Paired, every replicate gains exactly 0.10 although manual's F alone varies a lot.

    A bootstrap that resampled strategy and manual clips independently would add manual's and
    the strategy's own sampling noise (sd ~0.09 for the difference): an interval about ±0.18
    wide that covers 0. The paired one has zero width and is significant.
    """
    mine, manual = _heterogeneous_pair(extra=1)
    w = bootstrap_weights(40, N_BOOT, seed=0)
    alone = replicate_macro_f(manual, w)
    assert np.std(alone) > 0.04  # manual's own F does swing with the resampled clips
    g = gain_interval([(mine, manual)], N_BOOT, seed=0)
    assert g.gain == pytest.approx(0.10)
    assert g.low == pytest.approx(0.10, abs=1e-9)
    assert g.high == pytest.approx(0.10, abs=1e-9)
    assert g.significant


def test_interval_is_of_the_mean_gain_over_splits() -> None:
    """Two splits with exact paired gains 0.10 and 0.20: the interval is of their mean, 0.15."""
    g = gain_interval([_heterogeneous_pair(extra=1), _heterogeneous_pair(extra=2)], N_BOOT, seed=5)
    assert g.gain == pytest.approx(0.15)
    assert g.low == pytest.approx(0.15, abs=1e-9)
    assert g.high == pytest.approx(0.15, abs=1e-9)


@st.composite
def _split_pair(draw: st.DrawFn) -> tuple[ClipCounts, ClipCounts]:
    """Random (strategy, manual) per-clip counts of two classes on the same clips."""
    n = draw(st.integers(2, 15))

    def arr() -> I64:
        rows = []
        for _ in range(n):
            nref = draw(st.integers(1, 6))
            nsys = draw(st.integers(0, 6))
            rows.append([nref, nsys, draw(st.integers(0, min(nref, nsys)))])
        return np.array(rows, dtype=np.int64)

    return {"Dog": arr(), "Cat": arr()}, {"Dog": arr(), "Cat": arr()}


@settings(max_examples=40, derandomize=True, deadline=None)
@given(_split_pair(), st.integers(0, 1000))
def test_identical_counts_give_a_zero_interval(pair: tuple[ClipCounts, ClipCounts], seed: int) -> None:
    """A strategy with the very same per-clip counts as manual gains exactly 0 on every replicate."""
    mine, _ = pair
    g = gain_interval([(mine, mine)], 200, seed)
    assert (g.gain, g.low, g.high) == (0.0, 0.0, 0.0)
    assert not g.significant


@settings(max_examples=40, derandomize=True, deadline=None)
@given(_split_pair(), st.integers(0, 1000))
def test_swapping_strategy_and_manual_negates_the_interval(
    pair: tuple[ClipCounts, ClipCounts], seed: int
) -> None:
    """Paired, manual-vs-strategy is the mirror image of strategy-vs-manual (same resamples)."""
    mine, manual = pair
    g = gain_interval([(mine, manual)], 200, seed)
    r = gain_interval([(manual, mine)], 200, seed)
    assert r.gain == pytest.approx(-g.gain, abs=1e-12)
    assert r.low == pytest.approx(-g.high, abs=1e-12)
    assert r.high == pytest.approx(-g.low, abs=1e-12)


@pytest.mark.parametrize(
    ("low", "high", "significant"),
    [(0.001, 0.04, True), (0.0, 0.04, False), (-0.01, 0.05, False), (-0.05, -0.01, False)],
)
def test_significant_means_the_whole_interval_is_above_zero(
    low: float, high: float, significant: bool
) -> None:
    """Only the lower bound decides; a positive point gain with low <= 0 is not significant."""
    assert GainInterval(0.02, low, high).significant is significant


# ---------------------------------------------------------------------------------------------
# recommend()
# ---------------------------------------------------------------------------------------------

PARAMS = {"Dog": ClassParams(threshold=0.5)}
ZERO = GainInterval(0.0, 0.0, 0.0)
NAN_GAIN = GainInterval(math.nan, math.nan, math.nan)


def _row(
    strategy: str,
    selection: str,
    heldout: float,
    gain: GainInterval = ZERO,
    evaluations: float = 100.0,
    params: dict[str, ClassParams] | None = PARAMS,
) -> Row:
    """A comparison-table row with only what recommend() reads filled in meaningfully."""
    return Row(
        strategy=strategy,
        selection=selection,
        tuning_f_mean=heldout,
        tuning_f_std=0.0,
        heldout_f_mean=heldout,
        heldout_f_std=0.0,
        gain=gain,
        evaluations=evaluations,
        wall_s=1.0,
        heldout_class_f={"Dog": heldout},
        tuning_class_f={"Dog": heldout},
        params=params,
        trajectory=[],
    )


def test_recommend_manual_best_says_no_strategy_beat_manual() -> None:
    """When manual has the best held-out F, it is recommended and the statement says so."""
    rows = [_row("manual", "fixed", 0.60), _row("optuna", "robust", 0.58, GainInterval(-0.02, -0.05, 0.01))]
    best, msg = recommend(rows, "robust")
    assert best.key == "manual/fixed"
    assert msg == (
        "Recommended: manual/fixed (held-out macro F1 0.6000). "
        "No strategy beat the manual setting on held-out clips."
    )


def test_recommend_significant_gain_states_the_gain_and_interval() -> None:
    """A significant best strategy is recommended with its gain and 95% interval in points."""
    rows = [_row("manual", "fixed", 0.57), _row("optuna", "robust", 0.62, GainInterval(0.05, 0.02, 0.08))]
    best, msg = recommend(rows, "robust")
    assert best.key == "optuna/robust"
    assert msg == (
        "Recommended: optuna/robust: held-out macro F1 0.6200, "
        "+5.00 points over manual (95% CI +2.00 to +8.00)."
    )


def test_recommend_not_significant_says_no_strategy_beats_manual_significantly() -> None:
    """A best strategy whose interval covers 0 gets the plain 'not significant' statement."""
    rows = [_row("manual", "fixed", 0.60), _row("optuna", "robust", 0.61, GainInterval(0.01, -0.02, 0.04))]
    best, msg = recommend(rows, "robust")
    assert best.key == "optuna/robust"  # its parameters are still written
    assert msg.startswith("No strategy beats manual significantly on held-out clips: ")
    assert "the best, optuna/robust, gains +1.00 points (95% CI -2.00 to +4.00)." in msg
    assert msg.endswith("but manual is as good within noise.")
    assert "points over manual" not in msg


def test_recommend_without_manual_row_states_only_the_best() -> None:
    """Without a manual row there is no comparison to state."""
    rows = [_row("optuna", "robust", 0.62, NAN_GAIN), _row("random", "robust", 0.55, NAN_GAIN)]
    best, msg = recommend(rows, "robust")
    assert best.key == "optuna/robust"
    assert msg == "Recommended: optuna/robust (held-out macro F1 0.6200)."


def test_recommend_takes_only_the_jobs_selection_mode() -> None:
    """A naive row with a better held-out F is not the recommendation of a robust job, and a
    row without parameters (a clip-adaptive policy) is never taken while others exist."""
    sig = GainInterval(0.03, 0.01, 0.05)
    rows = [
        _row("manual", "fixed", 0.57),
        _row("optuna", "naive", 0.64, GainInterval(0.07, 0.04, 0.10)),
        _row("optuna", "robust", 0.60, sig),
        _row("rl", "adaptive", 0.70, GainInterval(0.13, 0.1, 0.16), params=None),
    ]
    best, msg = recommend(rows, "robust")
    assert best.key == "optuna/robust"
    assert msg.startswith("Recommended: optuna/robust: held-out macro F1 0.6000, +3.00 points")
    assert recommend(rows, "naive")[0].key == "optuna/naive"


def test_recommend_ties_go_to_fewer_evaluations() -> None:
    """Equal held-out F: the cheaper strategy is recommended."""
    sig = GainInterval(0.03, 0.01, 0.05)
    rows = [
        _row("manual", "fixed", 0.57, evaluations=1),
        _row("optuna", "robust", 0.60, sig, evaluations=200),
        _row("random", "robust", 0.60, sig, evaluations=50),
    ]
    assert recommend(rows, "robust")[0].key == "random/robust"
