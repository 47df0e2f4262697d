"""The vectorized evaluator against sed_eval 0.2.1 (the oracle), on generated and known cases.

Property tests (hypothesis, derandomized so every CI run checks the same cases) generate small
evaluations (1-4 clips of 10 s, 1-3 classes) with overlapping reference events, events at the
clip edges, zero-length events, empty and dense clips, tiny and huge collars, times on frame
grids (so that ``|a - b| == collar`` boundary cases occur) and arbitrary floats, and require
per-class Nref, Nsys, Ntp, per-class F and macro F to be identical to sed_eval's (NaN equal
to NaN). Hand-made cases with known answers pin the semantics, including one that needs
optimal (not greedy) matching, and the shared real data reproduces a published figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sed_eval
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.events import ClassEvents
from envs.groundtruth import read_ground_truth
from envs.metrics.counts import Counts
from envs.metrics.event_based import event_counts
from envs.metrics.fscore import class_f_measure, macro_f_measure
from envs.metrics.sed_eval_oracle import (
    MACRO_KEY,
    ClassCounts,
    sed_eval_event_counts,
    sed_eval_segment_counts,
)
from envs.metrics.segment_based import segment_counts

CLIP_S = 10.0
LABELS = ("Alarm_bell_ringing", "Dog", "Speech")
# sed_eval rejects t_collar <= 0, so "no collar" is the smallest positive float.
COLLARS = (5e-324, 1e-3, 0.05, 0.064, 0.1, 0.2, 0.25, 0.5, 1.0, 5.0, 100.0)
PERCENTAGES = (0.0, 0.2, 0.5, 1.0)
RESOLUTIONS = (1.0, 1.0, 1.0, 0.5, 0.25, 0.064)

EVENT_EXAMPLES = 600
SEGMENT_EXAMPLES = 300

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

Triple = tuple[int, float, float]


# --------------------------------------------------------------------------- helpers


def same_float(a: float, b: float) -> bool:
    """Exact float equality with NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == b


def class_events(triples: Sequence[Triple]) -> ClassEvents:
    """ClassEvents from (clip, onset, offset) triples."""
    return ClassEvents.from_lists([t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples])


def assert_identical(
    classes: Sequence[str],
    fast: Mapping[str, Counts],
    oracle: tuple[dict[str, ClassCounts], dict[str, float]],
) -> None:
    """Per-class counts, per-class F and macro F of the fast evaluator equal sed_eval's."""
    o_counts, o_f = oracle
    fast_f = []
    for label in classes:
        f, o = fast[label], o_counts[label]
        assert (f.nref, f.nsys, f.ntp) == (o.nref, o.nsys, o.ntp), f"{label}: fast {f} != sed_eval {o}"
        fm = class_f_measure(f)
        assert same_float(fm, o_f[label]), f"{label}: F fast {fm!r} != sed_eval {o_f[label]!r}"
        fast_f.append(fm)
    macro = macro_f_measure(fast_f)
    assert same_float(macro, o_f[MACRO_KEY]), f"macro fast {macro!r} != {o_f[MACRO_KEY]!r}"


# --------------------------------------------------------------------------- strategies

# Times in [0, 10]: clip edges, integer seconds (segment boundaries), frame grids with the
# hops of the real systems, 50 ms and 1 ms (3-decimal TSV) grids, and arbitrary floats.
times = st.one_of(
    st.sampled_from([0.0, CLIP_S]),
    st.integers(0, 10).map(float),
    st.integers(0, 156).map(lambda k: k * 0.064),
    st.integers(0, 156).map(lambda k: k * 0.06375),
    st.integers(0, 200).map(lambda k: k * 0.05),
    st.integers(0, 10_000).map(lambda k: k / 1000),
    st.floats(0.0, CLIP_S, allow_nan=False, allow_infinity=False),
)
short_lengths = st.sampled_from([0.001, 0.05, 0.064, 0.1, 0.128, 0.2, 0.25, 0.5])


@st.composite
def an_event(draw: st.DrawFn) -> tuple[float, float]:
    """One (onset, offset) with onset <= offset inside the clip."""
    kind = draw(st.sampled_from(["any", "any", "zero", "short", "from_start", "to_end", "whole"]))
    a, b = draw(times), draw(times)
    on, off = min(a, b), max(a, b)
    if kind == "zero":
        off = on
    elif kind == "short":
        off = min(on + draw(short_lengths), CLIP_S)
    elif kind == "from_start":
        on = 0.0
    elif kind == "to_end":
        off = CLIP_S
    elif kind == "whole":
        on, off = 0.0, CLIP_S
    return on, off


@st.composite
def dense_events(draw: st.DrawFn) -> list[tuple[float, float]]:
    """Many short events on a frame grid (gapless or with small gaps), as after thresholding."""
    hop = draw(st.sampled_from([0.064, 0.06375, 0.05, 0.1]))
    start = draw(st.integers(0, 40))
    out: list[tuple[float, float]] = []
    k = start
    for _ in range(draw(st.integers(5, 25))):
        n = draw(st.integers(1, 4))
        on, off = k * hop, (k + n) * hop
        if off > CLIP_S:
            break
        out.append((on, off))
        k += n + draw(st.integers(0, 2))
    return out


def perturbations(collar: float, pct: float, ref_len: float) -> st.SearchStrategy[float]:
    """Shifts that land on and around the onset/offset acceptance boundaries."""
    tol = max(collar, pct * ref_len)
    base = [0.0, collar, -collar, tol, -tol, pct * ref_len, -pct * ref_len]
    nudged = [x * (1 + s) for x in base[1:] for s in (1e-12, -1e-12)]
    return st.one_of(
        st.sampled_from(base + nudged),
        st.integers(-8, 8).map(lambda k: k * 0.064),
        st.integers(-8, 8).map(lambda k: k * 0.05),
        st.floats(-1.0, 1.0, allow_nan=False),
    )


@st.composite
def estimated_for(
    draw: st.DrawFn, refs: list[tuple[float, float]], collar: float, pct: float
) -> list[tuple[float, float]]:
    """System events of one (clip, class): shifted copies of some references plus others."""
    out: list[tuple[float, float]] = []
    for on, off in refs:
        for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
            d_on = draw(perturbations(collar, pct, off - on))
            d_off = draw(perturbations(collar, pct, off - on))
            e_on = min(max(on + d_on, 0.0), CLIP_S)
            e_off = min(max(off + d_off, 0.0), CLIP_S)
            out.append((e_on, max(e_on, e_off)))
    out += draw(st.lists(an_event(), max_size=draw(st.sampled_from([0, 0, 2, 4]))))
    if draw(st.integers(0, 9)) == 0:
        out += draw(dense_events())
    return out


@st.composite
def references_for(draw: st.DrawFn) -> list[tuple[float, float]]:
    """Reference events of one (clip, class): empty, a few (overlapping allowed), or dense."""
    mode = draw(st.sampled_from(["empty", "few", "few", "few", "overlap", "dense"]))
    if mode == "empty":
        return []
    if mode == "dense":
        return draw(dense_events())
    evs: list[tuple[float, float]] = draw(st.lists(an_event(), min_size=1, max_size=5))
    if mode == "overlap":
        # Same-class events that overlap: start inside another one, similar bounds.
        on, off = evs[0]
        for _ in range(draw(st.integers(1, 3))):
            d1 = draw(st.sampled_from([0.0, 0.05, 0.064, 0.1, 0.128, 0.2]))
            d2 = draw(st.sampled_from([0.0, 0.05, 0.064, 0.1, -0.1, 0.3]))
            o2 = min(on + d1, CLIP_S)
            evs.append((o2, min(max(off + d2, o2), CLIP_S)))
    return evs


@dataclass(frozen=True)
class Case:
    """One generated evaluation (plain lists so hypothesis prints a reproducible example)."""

    n_clips: int
    classes: tuple[str, ...]
    reference: dict[str, list[Triple]]
    estimated: dict[str, list[Triple]]
    t_collar_s: float
    percentage_of_length: float

    @property
    def filenames(self) -> list[str]:
        """Clip names, index = clip id."""
        return [f"clip{i:02d}.wav" for i in range(self.n_clips)]

    def events(self, which: Mapping[str, list[Triple]]) -> dict[str, ClassEvents]:
        """Per class, its events."""
        return {label: class_events(which[label]) for label in self.classes}


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A whole evaluation: clips, classes, collar, percentage, reference and system events."""
    n_clips = draw(st.integers(1, 4))
    n_classes = draw(st.integers(1, 3))
    classes = tuple(LABELS[:n_classes])
    collar = draw(st.one_of(st.sampled_from(COLLARS), st.floats(1e-6, 10.0)))
    pct = draw(st.sampled_from(PERCENTAGES))
    reference: dict[str, list[Triple]] = {c: [] for c in classes}
    estimated: dict[str, list[Triple]] = {c: [] for c in classes}
    for clip in range(n_clips):
        for label in classes:
            refs = draw(references_for())
            ests = draw(estimated_for(refs, collar, pct))
            reference[label] += [(clip, a, b) for a, b in refs]
            estimated[label] += [(clip, a, b) for a, b in ests]
    return Case(n_clips, classes, reference, estimated, collar, pct)


def property_settings(max_examples: int) -> settings:
    """Seeded (derandomized) hypothesis settings: the same cases on every CI run."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------- properties


@property_settings(EVENT_EXAMPLES)
@given(case=cases())
def test_event_based_matches_sed_eval(case: Case) -> None:
    ref, est = case.events(case.reference), case.events(case.estimated)
    fast = {
        label: event_counts(ref[label], est[label], case.t_collar_s, case.percentage_of_length)
        for label in case.classes
    }
    oracle = sed_eval_event_counts(
        case.filenames, case.classes, ref, est, case.t_collar_s, case.percentage_of_length
    )
    assert_identical(case.classes, fast, oracle)


@property_settings(SEGMENT_EXAMPLES)
@given(case=cases(), resolution=st.sampled_from(RESOLUTIONS))
def test_segment_based_matches_sed_eval(case: Case, resolution: float) -> None:
    ref, est = case.events(case.reference), case.events(case.estimated)
    fast = {label: segment_counts(ref[label], est[label], resolution) for label in case.classes}
    oracle = sed_eval_segment_counts(case.filenames, case.classes, ref, est, resolution)
    assert_identical(case.classes, fast, oracle)


# --------------------------------------------------------------------------- known answers


def one_class_event(
    ref: Sequence[Triple],
    est: Sequence[Triple],
    n_clips: int = 1,
    t_collar_s: float = 0.2,
    percentage_of_length: float = 0.2,
) -> tuple[Counts, ClassCounts]:
    """Fast and sed_eval event-based counts for a single class ("Dog")."""
    r, e = class_events(ref), class_events(est)
    fast = event_counts(r, e, t_collar_s, percentage_of_length)
    names = [f"c{i}.wav" for i in range(n_clips)]
    oc, of = sed_eval_event_counts(names, ["Dog"], {"Dog": r}, {"Dog": e}, t_collar_s, percentage_of_length)
    assert_identical(["Dog"], {"Dog": fast}, (oc, of))
    return fast, oc["Dog"]


def one_class_segment(
    ref: Sequence[Triple], est: Sequence[Triple], n_clips: int = 1
) -> tuple[Counts, ClassCounts]:
    """Fast and sed_eval segment-based counts (1 s) for a single class ("Dog")."""
    r, e = class_events(ref), class_events(est)
    fast = segment_counts(r, e, 1.0)
    names = [f"c{i}.wav" for i in range(n_clips)]
    oc, of = sed_eval_segment_counts(names, ["Dog"], {"Dog": r}, {"Dog": e}, 1.0)
    assert_identical(["Dog"], {"Dog": fast}, (oc, of))
    return fast, oc["Dog"]


def test_inside_collar_is_a_hit() -> None:
    fast, oracle = one_class_event([(0, 1.0, 3.0)], [(0, 1.1, 3.1)])
    assert (oracle.nref, oracle.nsys, oracle.ntp) == (1, 1, 1)
    assert fast.ntp == 1


def test_offset_outside_collar_and_percentage_is_a_miss() -> None:
    # Reference 1 s long: tolerance max(0.2, 0.2 * 1) = 0.2; offset off by 0.5.
    fast, oracle = one_class_event([(0, 1.0, 2.0)], [(0, 1.0, 2.5)])
    assert (oracle.ntp, fast.ntp) == (0, 0)
    # Reference 5 s long: tolerance max(0.2, 0.2 * 5) = 1.0, so 0.9 off is still a hit.
    fast, oracle = one_class_event([(0, 0.0, 5.0)], [(0, 0.0, 5.9)])
    assert (oracle.ntp, fast.ntp) == (1, 1)
    # The onset has no percentage rule.
    fast, oracle = one_class_event([(0, 0.0, 5.0)], [(0, 0.5, 5.0)])
    assert (oracle.ntp, fast.ntp) == (0, 0)


def test_boundaries_are_inclusive() -> None:
    # |1.0 - 1.25| == 0.25 exactly in binary: accepted (<=).
    fast, oracle = one_class_event([(0, 1.0, 3.0)], [(0, 1.25, 3.25)], t_collar_s=0.25)
    assert (oracle.ntp, fast.ntp) == (1, 1)
    # 1.2 - 1.0 is 0.19999999999999996 in float64: inside a 0.2 collar ...
    fast, oracle = one_class_event([(0, 1.0, 3.0)], [(0, 1.2, 3.0)])
    assert (oracle.ntp, fast.ntp) == (1, 1)
    # ... while 1.1 - 0.9 is 0.20000000000000007: outside.
    fast, oracle = one_class_event([(0, 1.1, 3.0)], [(0, 0.9, 3.0)])
    assert (oracle.ntp, fast.ntp) == (0, 0)


def test_overlapping_references_need_optimal_matching() -> None:
    # A = (1.0, 2.0) and B = (1.1, 2.3) overlap. X = (0.95, 2.15) hits A and B,
    # Y = (1.05, 1.85) hits only A (its offset is 0.45 from B's, tolerance 0.24).
    # Greedy (refs in order, first free system event) pairs A-X and leaves B alone;
    # optimal pairs A-Y and B-X.
    ref = [(0, 1.0, 2.0), (0, 1.1, 2.3)]
    est = [(0, 0.95, 2.15), (0, 1.05, 1.85)]
    fast, oracle = one_class_event(ref, est)
    assert (oracle.nref, oracle.nsys, oracle.ntp) == (2, 2, 2)
    assert fast.ntp == 2

    greedy = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=["Dog"],
        t_collar=0.2,
        percentage_of_length=0.2,
        event_matching_type="greedy",
        empty_system_output_handling="zero_score",
    )
    greedy.evaluate(
        [{"filename": "c.wav", "event_label": "Dog", "onset": a, "offset": b} for _, a, b in ref],
        [{"filename": "c.wav", "event_label": "Dog", "onset": a, "offset": b} for _, a, b in est],
    )
    assert greedy.class_wise["Dog"]["Ntp"] == 1


def test_one_system_event_matches_at_most_one_reference() -> None:
    # Two identical references, one system event: one true positive, one miss.
    fast, oracle = one_class_event([(0, 1.0, 2.0), (0, 1.0, 2.0)], [(0, 1.0, 2.0)])
    assert (oracle.nref, oracle.nsys, oracle.ntp) == (2, 1, 1)
    # Events only match within their own clip.
    fast, oracle = one_class_event([(0, 1.0, 2.0)], [(1, 1.0, 2.0)], n_clips=2)
    assert (oracle.ntp, fast.ntp) == (0, 0)


def test_zero_length_events() -> None:
    # Event-based: a zero-length event is an event like any other.
    _, oracle = one_class_event([(0, 2.0, 2.0)], [(0, 2.0, 2.0)])
    assert (oracle.nref, oracle.nsys, oracle.ntp) == (1, 1, 1)
    # Segment-based: zero length on a segment boundary covers no segment (floor == ceil) ...
    _, oracle_s = one_class_segment([(0, 2.0, 2.0)], [(0, 2.0, 2.0)])
    assert (oracle_s.nref, oracle_s.nsys, oracle_s.ntp) == (0, 0, 0)
    # ... inside a segment it covers that segment.
    _, oracle_s = one_class_segment([(0, 2.5, 2.5)], [(0, 2.5, 2.5)])
    assert (oracle_s.nref, oracle_s.nsys, oracle_s.ntp) == (1, 1, 1)


def test_segments_at_clip_edges() -> None:
    # (0, 0.5) covers segment 0; (9.9, 10.0) covers segment 9 only; (3.0, 5.0) covers 3 and 4.
    _, oracle = one_class_segment([(0, 0.0, 0.5), (0, 9.9, 10.0), (0, 3.0, 5.0)], [])
    assert (oracle.nref, oracle.nsys, oracle.ntp) == (4, 0, 0)
    # Overlapping events count each segment once.
    _, oracle = one_class_segment([(0, 1.0, 3.0), (0, 2.5, 3.5)], [(0, 0.0, 10.0)])
    assert (oracle.nref, oracle.nsys, oracle.ntp) == (3, 10, 3)


def test_empty_output_and_empty_reference() -> None:
    names = ["a.wav", "b.wav", "c.wav"]
    classes = ["Alarm_bell_ringing", "Dog", "Speech"]
    ref = {
        "Alarm_bell_ringing": class_events([(0, 1.0, 2.0)]),  # no output: F = 0 (zero_score)
        "Dog": class_events([]),  # output but no reference: F = NaN
        "Speech": class_events([(1, 0.0, 10.0)]),  # matched: F = 1
    }
    est = {
        "Alarm_bell_ringing": class_events([]),
        "Dog": class_events([(2, 4.0, 5.0)]),
        "Speech": class_events([(1, 0.1, 9.5)]),
    }
    counts, fs = sed_eval_event_counts(names, classes, ref, est)
    assert fs["Alarm_bell_ringing"] == 0.0
    assert math.isnan(fs["Dog"])
    assert fs["Speech"] == 1.0
    assert fs[MACRO_KEY] == 0.5  # NaN class left out of the average
    fast = {c: event_counts(ref[c], est[c]) for c in classes}
    assert_identical(classes, fast, (counts, fs))

    # No reference and no output for any class: everything NaN.
    empty = {c: class_events([]) for c in classes}
    counts, fs = sed_eval_event_counts(names, classes, empty, empty)
    assert all(counts[c] == ClassCounts(0, 0, 0) for c in classes)
    assert all(math.isnan(fs[k]) for k in [*classes, MACRO_KEY])
    fast = {c: event_counts(empty[c], empty[c]) for c in classes}
    assert_identical(classes, fast, (counts, fs))


def test_sed_eval_rejects_a_zero_collar() -> None:
    with pytest.raises(ValueError, match="t_collar"):
        sed_eval_event_counts(["a.wav"], ["Dog"], {}, {}, t_collar_s=0.0)


def test_integer_parameters_are_accepted() -> None:
    ev = {"Dog": class_events([(0, 1.0, 2.0)])}
    counts, _ = sed_eval_event_counts(["a.wav"], ["Dog"], ev, ev, t_collar_s=5, percentage_of_length=1)
    assert counts["Dog"] == ClassCounts(1, 1, 1)
    counts, _ = sed_eval_segment_counts(["a.wav"], ["Dog"], ev, ev, time_resolution_s=1)
    assert counts["Dog"] == ClassCounts(1, 1, 1)


# --------------------------------------------------------------------------- real data


def _threshold_events(
    score_dir: Path, filenames: Sequence[str], classes: Sequence[str], threshold: float
) -> dict[str, ClassEvents]:
    """Events = runs of frames with score > threshold, first frame's onset to last's offset."""
    per: dict[str, list[Triple]] = {c: [] for c in classes}
    for i, fn in enumerate(filenames):
        path = score_dir / (fn.removesuffix(".wav") + ".tsv")
        with path.open(encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
        table = np.loadtxt(path, skiprows=1, delimiter="\t", ndmin=2)
        on, off = table[:, 0], table[:, 1]
        for label in classes:
            active = table[:, header.index(label)] > threshold
            edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
            starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
            per[label] += [(i, float(on[s]), float(off[e])) for s, e in zip(starts, ends, strict=True)]
    return {c: class_events(v) for c, v in per.items()}


@pytest.mark.skipif(not (DATA / "dcase2023-eval-sample").is_dir(), reason="shared data missing")
def test_real_dcase2023_sample_reproduces_published_figure() -> None:
    base = DATA / "dcase2023-eval-sample"
    gt = read_ground_truth(str(base / "ground_truth.tsv"))
    classes = [
        "Alarm_bell_ringing", "Blender", "Cat", "Dishes", "Dog",
        "Electric_shaver_toothbrush", "Frying", "Running_water", "Speech", "Vacuum_cleaner",
    ]  # fmt: skip
    ref = {c: gt.class_events(c) for c in classes}
    est = _threshold_events(base / "baseline2-run1" / "scores", gt.filenames, classes, 0.5)

    oracle = sed_eval_event_counts(gt.filenames, classes, ref, est)
    assert round(oracle[1][MACRO_KEY], 4) == 0.4470
    assert_identical(classes, {c: event_counts(ref[c], est[c]) for c in classes}, oracle)

    oracle = sed_eval_segment_counts(gt.filenames, classes, ref, est)
    fast = {c: segment_counts(ref[c], est[c], 1.0) for c in classes}
    assert_identical(classes, fast, oracle)
