"""The parameter file ``sedtune.params/2`` (a decoder per class) and ``/1`` compatibility.

- a ``/2`` file with both decoders round-trips (save, load: equal; each class holds its own
  decoder's fields only);
- ``/1`` files (no ``decoder``) load as ``frames`` and decode exactly as before: the events
  equal :func:`envs.stack.apply_stack` with the same parameters, through the Python API, the
  evaluator and ``sedtune apply``;
- every invalid value is refused with one line naming the file and the field path
  (``classes.<class>`` and the field), in Python and through ``sedtune evaluate`` / ``sedtune
  apply``: exit code 2, one ``sedtune: error:`` line, no traceback, no output file;
- ``sedtune apply`` with a mixed ``/2`` file writes events whose sed_eval macro F1 (computed
  here from the TSV) equals ``sedtune evaluate --json`` and the Python API
  (:func:`envs.decoders.score_set_events` + :class:`envs.evaluator.Evaluator`).
"""

from __future__ import annotations

import copy
import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.decoders import score_set_events
from envs.errors import SedtuneInputError
from envs.evalset import open_eval_set
from envs.evaluator import Evaluator
from envs.events import ClassEvents
from envs.groundtruth import read_durations, read_ground_truth
from envs.metrics.counts import Counts
from envs.metrics.sed_eval_oracle import MACRO_KEY, sed_eval_event_counts
from envs.params import ClassParams, ParamFile, load_params, params_from_json
from envs.scoreset import ScoreSet
from envs.scorewriter import ScoreSetWriter
from envs.stack import apply_stack
from service.cli import main

V1, V2 = "sedtune.params/1", "sedtune.params/2"
FRAMES_KEYS = {
    "decoder", "median_filter_frames", "threshold", "fill_gap_s", "min_duration_s",
    "threshold_off",
}  # fmt: skip
BOXES_KEYS = {
    "decoder", "median_filter_frames", "threshold", "fill_gap_s", "min_duration_s",
    "step_filter_s", "merge_abs", "merge_rel", "confidence",
}  # fmt: skip


def boxes(**kw: Any) -> ClassParams:
    base: dict[str, Any] = {"decoder": "boxes", "step_filter_s": 0.48, "threshold": 0.5}
    return ClassParams(**(base | kw)).validate("test")


def frames(**kw: Any) -> ClassParams:
    return ClassParams(**({"threshold": 0.5} | kw)).validate("test")


# --------------------------------------------------------------------------- round trip

MIXED = {
    "Dog": frames(median_filter_frames=7, threshold=0.42, min_duration_s=0.1),
    "Cat": boxes(step_filter_s=0.48, merge_abs=0.2, threshold=0.35),
    "Speech": frames(median_filter_frames=3, threshold=0.6, threshold_off=0.3, fill_gap_s=0.2),
    "Blender": boxes(
        median_filter_frames=5,
        step_filter_s=0.32,
        merge_rel=2.0,
        confidence="max",
        threshold=0.7,
        fill_gap_s=0.1,
        min_duration_s=0.25,
    ),
    "Frying": boxes(step_filter_s=0.64, merge_abs=0.15, merge_rel=1.5, threshold=0.05),
    "Dishes": boxes(step_filter_s=0.16, threshold=0.95),  # no merging
}


def test_v2_file_with_both_decoders_round_trips(tmp_path):
    pf = ParamFile(0.064, dict(MIXED), {"strategy": "exact", "scores": "s3://bucket/scores"})
    path = tmp_path / "params.json"
    pf.save(str(path))
    on_disk = json.loads(path.read_text())
    assert on_disk["format"] == V2 and on_disk["frame_hop_s"] == 0.064
    assert on_disk["metadata"] == {"strategy": "exact", "scores": "s3://bucket/scores"}
    for label, entry in on_disk["classes"].items():
        # each class carries its decoder and that decoder's fields only
        assert set(entry) == (BOXES_KEYS if MIXED[label].decoder == "boxes" else FRAMES_KEYS), label
        assert entry["decoder"] == MIXED[label].decoder
    assert (
        on_disk["classes"]["Dishes"]["merge_abs"] is None
        and on_disk["classes"]["Dishes"]["merge_rel"] is None
    )
    loaded = load_params(str(path))
    assert loaded == pf
    assert list(loaded.classes) == list(MIXED)  # class order kept
    again = tmp_path / "again.json"
    loaded.save(str(again))
    assert again.read_text() == path.read_text()


@st.composite
def class_params(draw: st.DrawFn) -> ClassParams:
    """Any valid parameters of either decoder."""
    t = draw(st.floats(1e-6, 1.0, exclude_max=True))
    common: dict[str, Any] = {
        "median_filter_frames": draw(st.integers(0, 499)) * 2 + 1,
        "threshold": t,
        "fill_gap_s": draw(st.floats(0.0, 5.0)),
        "min_duration_s": draw(st.floats(0.0, 5.0)),
    }
    if draw(st.booleans()):
        off = draw(st.none() | st.floats(1e-9, t).filter(lambda o: 0 < o <= t))
        return ClassParams(threshold_off=off, **common).validate("generated")
    return ClassParams(
        decoder="boxes",
        step_filter_s=draw(st.floats(1e-6, 60.0)),
        merge_abs=draw(st.none() | st.floats(1e-9, 1.0)),
        merge_rel=draw(st.none() | st.floats(1.0, 1e6, exclude_min=True)),
        confidence=draw(st.sampled_from(["mean", "max"])),
        **common,
    ).validate("generated")


@settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    params=st.dictionaries(
        st.sampled_from(["Dog", "Cat", "Speech", "Alarm_bell_ringing"]), class_params(), min_size=1
    ),
    hop=st.floats(1e-4, 1.0),
)
def test_any_valid_v2_file_round_trips(tmp_path, params, hop):
    pf = ParamFile(hop, params)
    path = tmp_path / "p.json"
    pf.save(str(path))
    assert load_params(str(path)) == pf
    assert params_from_json(json.loads(json.dumps(pf.to_json())), "p") == pf


# --------------------------------------------------------------------------- /1 files

V1_CLASSES: dict[str, dict[str, Any]] = {
    "Alarm_bell_ringing": {
        "median_filter_frames": 7,
        "threshold": 0.42,
        "fill_gap_s": 0.0,
        "min_duration_s": 0.1,
    },
    "Blender": {"median_filter_frames": 1, "threshold": 0.5},
    "Cat": {"median_filter_frames": 3, "threshold": 0.6, "threshold_off": 0.3},
    "Dishes": {"median_filter_frames": 9, "threshold": 0.35, "fill_gap_s": 0.2},
    "Dog": {"median_filter_frames": 5.0, "threshold": 0.45, "threshold_off": None, "min_duration_s": 0.25},
    "Electric_shaver_toothbrush": {"threshold": 0.3},
    "Frying": {"median_filter_frames": 21, "threshold": 0.7, "threshold_off": 0.7},
    "Running_water": {
        "median_filter_frames": 11,
        "threshold": 0.55,
        "fill_gap_s": 0.3,
        "min_duration_s": 0.2,
    },
    "Speech": {
        "median_filter_frames": 3,
        "threshold": 0.5,
        "threshold_off": 0.2,
        "fill_gap_s": 0.1,
        "min_duration_s": 0.15,
    },
    "Vacuum_cleaner": {"median_filter_frames": 13, "threshold": 0.25},
}


def _v1_expected(entry: dict[str, Any]) -> ClassParams:
    """What a /1 entry always meant: frames parameters, the missing fields at their defaults."""
    kw = dict(entry)
    if "median_filter_frames" in kw:
        kw["median_filter_frames"] = int(kw["median_filter_frames"])
    return ClassParams(**kw)


def _read_tsv_events(path: Path, filenames: Sequence[str], classes: Sequence[str]) -> dict[str, ClassEvents]:
    index = {n: i for i, n in enumerate(filenames)}
    per: dict[str, tuple[list[int], list[float], list[float]]] = {c: ([], [], []) for c in classes}
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            c = per[row["event_label"]]
            c[0].append(index[row["filename"]])
            c[1].append(float(row["onset"]))
            c[2].append(float(row["offset"]))
    return {c: ClassEvents.from_lists(*v) for c, v in per.items()}


def _argv(command: str, scores: str, gt: str, dur: str, params: Path, out: Path, *extra: str) -> list[str]:
    """``sedtune evaluate`` or ``sedtune apply`` on a score set with a parameter file."""
    common = ["--scores", scores, "--durations", dur, "--params", str(params)]
    if command == "evaluate":
        return ["evaluate", *common, "--ground-truth", gt, *extra]
    return ["apply", *common, "--out", str(out), *extra]


def _same(a: ClassEvents, b: ClassEvents) -> bool:
    return (
        np.array_equal(a.clip, b.clip)
        and np.array_equal(a.onset_s, b.onset_s)
        and np.array_equal(a.offset_s, b.offset_s)
    )


@pytest.mark.parametrize("name", ["dcase2023-eval-sample", "dcase2021-baseline-teacher"])
def test_v1_file_loads_as_frames_and_decodes_as_before(shared_sets, tmp_path, capsys, name):
    s = shared_sets[name]
    scores = ScoreSet.open(s.scores)
    path = tmp_path / "v1.json"
    path.write_text(json.dumps({"format": V1, "frame_hop_s": scores.frame_hop_s, "classes": V1_CLASSES}))
    pf = load_params(str(path))
    assert set(pf.classes) == set(V1_CLASSES)
    for c, entry in V1_CLASSES.items():
        assert pf.classes[c] == _v1_expected(entry), c
        assert pf.classes[c].decoder == "frames"

    durations = read_durations(s.durations)
    names = scores.filenames
    dur = np.array([durations[n] for n in names])
    api, api_names = score_set_events(s.scores, pf, durations)
    assert api_names == names
    ev = Evaluator(open_eval_set(s.scores, s.ground_truth, s.durations))
    gt_order = np.array([ev.data.filenames.index(n) for n in names])
    out = tmp_path / "events.tsv"
    assert main(_argv("apply", s.scores, s.ground_truth, s.durations, path, out)) == 0
    capsys.readouterr()
    from_cli = _read_tsv_events(out, names, scores.classes)
    non_empty = 0
    for c, entry in V1_CLASSES.items():
        before = apply_stack(scores.read_class(c), _v1_expected(entry), scores.frame_hop_s, dur)
        non_empty += len(before) > 0
        assert _same(api[c], before), c
        assert _same(from_cli[c], before), c
        # the evaluator indexes clips in ground-truth order
        e = ev.events(c, pf.classes[c])
        renumbered = ClassEvents.from_lists(gt_order[before.clip], before.onset_s, before.offset_s)
        assert _same(e, renumbered), c
    assert non_empty >= 7  # not a comparison of empty outputs

    # Saved again, a /1 file becomes /2 with decoder "frames" and the same parameters.
    v2 = tmp_path / "v2.json"
    pf.save(str(v2))
    obj = json.loads(v2.read_text())
    assert obj["format"] == V2
    assert all(e["decoder"] == "frames" for e in obj["classes"].values())
    assert load_params(str(v2)) == pf


# --------------------------------------------------------------------------- invalid values

HOP = 0.1
N_FRAMES = 20
CLIPS = ("a.wav", "b.wav", "c.wav")
GOOD_V2: dict[str, Any] = {
    "format": V2,
    "frame_hop_s": HOP,
    "classes": {
        "Dog": {
            "decoder": "boxes", "median_filter_frames": 1, "step_filter_s": 0.3, "merge_abs": 0.2,
            "merge_rel": None, "confidence": "mean", "threshold": 0.5, "fill_gap_s": 0.0,
            "min_duration_s": 0.0,
        },
        "Cat": {"decoder": "frames", "median_filter_frames": 3, "threshold": 0.4, "threshold_off": None},
    },
}  # fmt: skip
GOOD_V1: dict[str, Any] = {
    "format": V1,
    "frame_hop_s": HOP,
    "classes": {"Dog": {"median_filter_frames": 3, "threshold": 0.5}, "Cat": {"threshold": 0.4}},
}


def _with(base: dict[str, Any], label: str, **changes: Any) -> dict[str, Any]:
    """``base`` with one class's fields changed (``_DROP`` removes a field)."""
    obj = copy.deepcopy(base)
    for k, v in changes.items():
        if v is _DROP:
            obj["classes"][label].pop(k)
        else:
            obj["classes"][label][k] = v
    return obj


_DROP = object()

# (id, file content, class, field): the error must name "classes.<class>" and the field.
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("step_filter_s 0", _with(GOOD_V2, "Dog", step_filter_s=0), "Dog", "step_filter_s"),
    ("step_filter_s 0.0", _with(GOOD_V2, "Dog", step_filter_s=0.0), "Dog", "step_filter_s"),
    ("step_filter_s negative", _with(GOOD_V2, "Dog", step_filter_s=-0.32), "Dog", "step_filter_s"),
    ("step_filter_s null", _with(GOOD_V2, "Dog", step_filter_s=None), "Dog", "step_filter_s"),
    ("step_filter_s string", _with(GOOD_V2, "Dog", step_filter_s="0.3"), "Dog", "step_filter_s"),
    ("step_filter_s bool", _with(GOOD_V2, "Dog", step_filter_s=True), "Dog", "step_filter_s"),
    ("step_filter_s NaN", _with(GOOD_V2, "Dog", step_filter_s=math.nan), "Dog", "step_filter_s"),
    ("step_filter_s inf", _with(GOOD_V2, "Dog", step_filter_s=math.inf), "Dog", "step_filter_s"),
    ("step_filter_s above 60 s", _with(GOOD_V2, "Dog", step_filter_s=61.0), "Dog", "step_filter_s"),
    ("step_filter_s missing for boxes", _with(GOOD_V2, "Dog", step_filter_s=_DROP), "Dog", "step_filter_s"),
    ("merge_abs 0", _with(GOOD_V2, "Dog", merge_abs=0), "Dog", "merge_abs"),
    ("merge_abs negative", _with(GOOD_V2, "Dog", merge_abs=-0.1), "Dog", "merge_abs"),
    ("merge_abs above 1", _with(GOOD_V2, "Dog", merge_abs=1.5), "Dog", "merge_abs"),
    ("merge_abs string", _with(GOOD_V2, "Dog", merge_abs="0.2"), "Dog", "merge_abs"),
    ("merge_abs bool", _with(GOOD_V2, "Dog", merge_abs=True), "Dog", "merge_abs"),
    ("merge_rel 1", _with(GOOD_V2, "Dog", merge_rel=1), "Dog", "merge_rel"),
    ("merge_rel 1.0", _with(GOOD_V2, "Dog", merge_rel=1.0), "Dog", "merge_rel"),
    ("merge_rel below 1", _with(GOOD_V2, "Dog", merge_rel=0.5), "Dog", "merge_rel"),
    ("merge_rel negative", _with(GOOD_V2, "Dog", merge_rel=-2.0), "Dog", "merge_rel"),
    ("merge_rel NaN", _with(GOOD_V2, "Dog", merge_rel=math.nan), "Dog", "merge_rel"),
    ("unknown decoder", _with(GOOD_V2, "Dog", decoder="bogus"), "Dog", "decoder"),
    ("decoder null", _with(GOOD_V2, "Cat", decoder=None), "Cat", "decoder"),
    ("decoder not a string", _with(GOOD_V2, "Cat", decoder=1), "Cat", "decoder"),
    ("confidence unknown", _with(GOOD_V2, "Dog", confidence="median"), "Dog", "confidence"),
    ("confidence null", _with(GOOD_V2, "Dog", confidence=None), "Dog", "confidence"),
    ("threshold_off on boxes", _with(GOOD_V2, "Dog", threshold_off=0.2), "Dog", "threshold_off"),
    ("threshold_off null on boxes", _with(GOOD_V2, "Dog", threshold_off=None), "Dog", "threshold_off"),
    ("step_filter_s on frames", _with(GOOD_V2, "Cat", step_filter_s=0.48), "Cat", "step_filter_s"),
    ("merge_abs on frames", _with(GOOD_V2, "Cat", merge_abs=0.2), "Cat", "merge_abs"),
    ("merge_rel on frames", _with(GOOD_V2, "Cat", merge_rel=2.0), "Cat", "merge_rel"),
    ("merge_abs null on frames", _with(GOOD_V2, "Cat", merge_abs=None), "Cat", "merge_abs"),
    ("confidence on frames", _with(GOOD_V2, "Cat", confidence="mean"), "Cat", "confidence"),
    ("threshold missing for boxes", _with(GOOD_V2, "Dog", threshold=_DROP), "Dog", "threshold"),
    ("threshold 1 for boxes", _with(GOOD_V2, "Dog", threshold=1.0), "Dog", "threshold"),
    ("even kernel for boxes", _with(GOOD_V2, "Dog", median_filter_frames=4), "Dog", "median_filter_frames"),
    ("unknown field for boxes", _with(GOOD_V2, "Dog", kernel=3), "Dog", "kernel"),
    ("decoder in a /1 file", _with(GOOD_V1, "Dog", decoder="boxes"), "Dog", "decoder"),
    ("decoder frames in a /1 file", _with(GOOD_V1, "Cat", decoder="frames"), "Cat", "decoder"),
    ("step_filter_s in a /1 file", _with(GOOD_V1, "Dog", step_filter_s=0.48), "Dog", "step_filter_s"),
    ("confidence in a /1 file", _with(GOOD_V1, "Dog", confidence="max"), "Dog", "confidence"),
]
INVALID_IDS = [c[0] for c in INVALID]


def _names_field(line: str, label: str, field: str) -> None:
    assert "\n" not in line
    assert "params.json" in line, line
    assert f"classes.{label}" in line, line
    assert field in line, line


@pytest.mark.parametrize(("obj", "label", "field"), [c[1:] for c in INVALID], ids=INVALID_IDS)
def test_invalid_value_is_refused_naming_the_field(obj, label, field):
    with pytest.raises(SedtuneInputError) as err:
        params_from_json(json.loads(json.dumps(obj)), "params.json")
    _names_field(str(err.value), label, field)


def _write_set(root: Path) -> tuple[str, str, str]:
    """A small score set (Dog, Cat; 3 clips of 20 frames at 0.1 s) with ground truth and durations."""
    rng = np.random.default_rng(0)
    with ScoreSetWriter(str(root / "scores"), ["Dog", "Cat"], HOP) as w:
        for name in CLIPS:
            w.add(name, rng.uniform(0, 1, (N_FRAMES, 2)).astype(np.float32))
    gt = root / "gt.tsv"
    gt.write_text(
        "filename\tonset\toffset\tevent_label\na.wav\t0.1\t0.5\tDog\nb.wav\t0.2\t0.6\tCat\nc.wav\t\t\t\n"
    )
    dur = root / "durations.tsv"
    dur.write_text("filename\tduration\n" + "".join(f"{n}\t2.0\n" for n in CLIPS))
    return str(root / "scores"), str(gt), str(dur)


@pytest.mark.parametrize("command", ["evaluate", "apply"])
def test_good_files_are_accepted_by_the_cli(tmp_path, capsys, command):
    """The valid bases of the invalid cases pass: each failure below comes from its one defect."""
    scores, gt, dur = _write_set(tmp_path)
    for obj in (GOOD_V2, GOOD_V1):
        params = tmp_path / "params.json"
        params.write_text(json.dumps(obj))
        out = tmp_path / "events.tsv"
        assert main(_argv(command, scores, gt, dur, params, out)) == 0, capsys.readouterr().err
        assert capsys.readouterr().err == ""
        assert out.exists() == (command == "apply")


@pytest.mark.parametrize("command", ["evaluate", "apply"])
@pytest.mark.parametrize(("obj", "label", "field"), [c[1:] for c in INVALID], ids=INVALID_IDS)
def test_invalid_value_through_the_cli(tmp_path, capsys, command, obj, label, field):
    scores, gt, dur = _write_set(tmp_path)
    params = tmp_path / "params.json"
    params.write_text(json.dumps(obj))  # NaN and Infinity as JSON accepts them
    out = tmp_path / "events.tsv"
    code = main(_argv(command, scores, gt, dur, params, out))
    stdout, stderr = capsys.readouterr()
    assert code == 2, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one line: {stderr!r}"
    assert stderr.startswith("sedtune: error: "), stderr
    _names_field(stderr.rstrip("\n"), label, field)
    assert not out.exists()


# --------------------------------------------------------------------------- apply = evaluate


def _mixed_file(classes: Sequence[str], hop: float) -> ParamFile:
    """Both decoders over the classes, each class its own setting."""
    steps = [0.16, 0.32, 0.48, 0.64, 0.96]
    merges = [(None, None), (0.2, None), (None, 2.0), (0.15, 1.5)]
    out = {}
    for i, c in enumerate(classes):
        if i % 3 == 0:
            out[c] = frames(
                median_filter_frames=[1, 5, 9][(i // 3) % 3],
                threshold=0.3 + 0.04 * i,
                threshold_off=0.2 if i % 2 else None,
                fill_gap_s=0.1 * (i % 2),
            )
        else:
            a, r = merges[i % 4]
            out[c] = boxes(
                median_filter_frames=[1, 5][i % 2],
                step_filter_s=steps[i % 5],
                merge_abs=a,
                merge_rel=r,
                confidence=["mean", "max"][(i // 2) % 2],
                threshold=0.25 + 0.05 * i,
                fill_gap_s=0.2 * (i % 3 == 2),
                min_duration_s=0.1 * (i % 4 == 1),
            )
    return ParamFile(hop, out)


@pytest.mark.parametrize("name", ["dcase2023-eval-sample", "dcase2021-baseline-student"])
def test_apply_v2_events_score_like_evaluate_and_the_api(shared_sets, tmp_path, capsys, name):
    s = shared_sets[name]
    scores = ScoreSet.open(s.scores)
    pf = _mixed_file(scores.classes, scores.frame_hop_s)
    assert {p.decoder for p in pf.classes.values()} == {"frames", "boxes"}
    path = tmp_path / "params.json"
    pf.save(str(path))
    out = tmp_path / "events.tsv"

    assert main(_argv("apply", s.scores, s.ground_truth, s.durations, path, out)) == 0
    n_written = int(capsys.readouterr().out.split()[1])
    assert main(_argv("evaluate", s.scores, s.ground_truth, s.durations, path, out, "--json")) == 0
    reported = json.loads(capsys.readouterr().out)
    sed_eval_argv = _argv(
        "evaluate", s.scores, s.ground_truth, s.durations, path, out, "--json", "--evaluator", "sed_eval"
    )
    assert main(sed_eval_argv) == 0
    reported_sed_eval = json.loads(capsys.readouterr().out)

    # sed_eval on the written TSV
    truth = read_ground_truth(s.ground_truth)
    written = _read_tsv_events(out, truth.filenames, scores.classes)
    assert sum(len(e) for e in written.values()) == n_written > 0
    counts, fs = sed_eval_event_counts(truth.filenames, scores.classes, truth.events, written, 0.2, 0.2)
    assert not math.isnan(fs[MACRO_KEY])
    assert fs[MACRO_KEY] == reported["macro_f_measure"] == reported_sed_eval["macro_f_measure"]
    for c in scores.classes:
        o = counts[c]
        got = reported["classes"][c]
        assert (got["nref"], got["nsys"], got["ntp"]) == (o.nref, o.nsys, o.ntp), c

    # the Python API: score_set_events gives the written events; the evaluator the same figures
    loaded = load_params(str(path))
    api, names = score_set_events(s.scores, loaded, read_durations(s.durations))
    index = {n: i for i, n in enumerate(truth.filenames)}
    gt_idx = np.array([index[n] for n in names], np.int64)
    ev = Evaluator(open_eval_set(s.scores, s.ground_truth, s.durations))
    for c in scores.classes:
        in_gt_order = ClassEvents.from_lists(gt_idx[api[c].clip], api[c].onset_s, api[c].offset_s)
        assert _same(in_gt_order, written[c]), c
        assert _same(ev.events(c, loaded.classes[c]), written[c]), c
        assert ev.class_counts(c, loaded.classes[c]) == Counts(
            counts[c].nref, counts[c].nsys, counts[c].ntp
        ), c
    assert ev.evaluate(loaded.classes).macro_f == fs[MACRO_KEY]
