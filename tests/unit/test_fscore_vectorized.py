"""The vectorized F (every held-out and selection figure) equals the sed_eval-checked scalar F."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.metrics.counts import Counts
from envs.metrics.fscore import class_f_measure, f_measure, macro_f_measure, macro_f_of_totals


@st.composite
def counts(draw: st.DrawFn) -> Counts:
    nref = draw(st.integers(0, 2000))
    nsys = draw(st.integers(0, 2000))
    ntp = draw(st.integers(0, min(nref, nsys)))
    return Counts(nref, nsys, ntp)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.lists(counts(), min_size=1, max_size=12))
def test_vectorized_f_is_the_scalar_f_bit_for_bit(cs: list[Counts]) -> None:
    arr = np.array([[c.nref, c.nsys, c.ntp] for c in cs])
    vec = f_measure(arr[:, 0], arr[:, 1], arr[:, 2])
    for c, v in zip(cs, vec, strict=True):
        assert _same(float(v), class_f_measure(c)), c
    assert _same(macro_f_of_totals(arr), macro_f_measure([class_f_measure(c) for c in cs]))


def test_edge_cases() -> None:
    assert math.isnan(float(f_measure(0, 5, 0)))  # no reference event: NaN (drops out of the macro)
    assert float(f_measure(5, 0, 0)) == 0.0  # no output: zero_score
    assert math.isnan(macro_f_of_totals([[0, 3, 0], [0, 0, 0]]))
    assert macro_f_of_totals([[0, 3, 0], [4, 4, 4]]) == 1.0
