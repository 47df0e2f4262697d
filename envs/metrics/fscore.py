"""F-measure from counts, exactly as sed_eval 0.2.1 computes it.

sed_eval (``class_wise_f_measure`` with ``empty_system_output_handling="zero_score"``):
precision is 0 when the system output is empty, else ``Ntp / Nsys``; recall is NaN when
there is no reference event, else ``Ntp / Nref``; F is 0 when both are 0, else
``2 * P * R / (P + R)`` (NaN propagates). The macro F is the ``nanmean`` over classes, so a
class without reference events drops out, while a class without output scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from envs.metrics.counts import Counts


def precision(c: Counts) -> float:
    """Precision with zero_score: 0 for an empty system output."""
    if c.nsys == 0:
        return 0.0
    return float(c.ntp / float(c.nsys))


def recall(c: Counts) -> float:
    """Recall; NaN without reference events (as sed_eval)."""
    if c.nref == 0:
        return math.nan
    return float(c.ntp / float(c.nref))


def f_from_pr(p: float, r: float) -> float:
    """sed_eval's ``metric.f_measure`` with beta 1, same float operations."""
    if p == 0 and r == 0:
        return 0.0
    return float((1 + 1.0**2) * p * r / ((1.0**2) * p + r))


def class_f_measure(c: Counts) -> float:
    """Class-wise F-measure (NaN when the class has no reference event)."""
    return f_from_pr(precision(c), recall(c))


def macro_f_measure(per_class: Sequence[float]) -> float:
    """Class-wise average, ignoring NaN (sed_eval's ``numpy.nanmean``); NaN if all are NaN."""
    arr = np.asarray(list(per_class), dtype=np.float64)
    if arr.size == 0 or np.isnan(arr).all():
        return math.nan
    return float(np.nanmean(arr))


def f_measure(nref: npt.ArrayLike, nsys: npt.ArrayLike, ntp: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """:func:`class_f_measure` vectorized over arrays of counts (the same float operations).

    Property-tested equal to the scalar path; NaN where ``nref == 0``.
    """
    nref_a = np.asarray(nref, np.float64)
    nsys_a = np.asarray(nsys, np.float64)
    ntp_a = np.asarray(ntp, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(nsys_a > 0, ntp_a / np.where(nsys_a > 0, nsys_a, 1), 0.0)
        r = np.where(nref_a > 0, ntp_a / np.where(nref_a > 0, nref_a, 1), np.nan)
        f = np.where((p == 0) & (r == 0), 0.0, 2.0 * p * r / (p + r))
    return np.asarray(f, np.float64)


def macro_f_of_totals(totals: Iterable[npt.ArrayLike]) -> float:
    """Macro F of per-class ``[nref, nsys, ntp]`` totals (``nanmean``; NaN if every class is NaN)."""
    return macro_f_measure([float(f_measure(*np.asarray(t))) for t in totals])
