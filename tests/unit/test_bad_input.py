"""Bad input gets one clear line, exit code 2 and no traceback.

Every case runs the ``sedtune`` CLI in-process on a small broken input built in ``tmp_path``
(2-3 clips, classes Dog and Cat, 10 frames at a 0.1 s hop) and requires: exit code 2, nothing
on stdout, exactly one line on stderr starting with ``sedtune: error:`` that names the
offending file and, where there is one, the clip, class, line or field. Score values the
writer would refuse (NaN, inf, out of [0, 1], ragged class lists) are written straight to a
Parquet shard with the writer's schema. Imports also must not touch a set already stored nor
leave a half-written one behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from envs.errors import SedtuneInputError
from envs.scoreformat import shard_schema
from envs.scoreset import ScoreSet
from envs.scorewriter import ScoreSetWriter
from service.cli import main

CLASSES = ("Dog", "Cat")
HOP = 0.1
N_FRAMES = 10
CLIPS = ("a.wav", "b.wav", "c.wav")
GT_ROWS = (
    ("a.wav", "0.1", "0.5", "Dog"),
    ("b.wav", "0.2", "0.6", "Cat"),
    ("c.wav", "", "", ""),
)
GOOD_PARAMS: dict[str, Any] = {
    "format": "sedtune.params/1",
    "frame_hop_s": HOP,
    "classes": {
        "Dog": {"median_filter_frames": 3, "threshold": 0.5},
        "Cat": {"median_filter_frames": 1, "threshold": 0.4},
    },
}


# ---------------------------------------------------------------------------------------------
# Builders


def _matrix(seed: int, n_frames: int = N_FRAMES, n_classes: int = len(CLASSES)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n_frames, n_classes)).astype(np.float32)


def write_set(
    uri: Path, clips: Sequence[str] = CLIPS, classes: Sequence[str] = CLASSES, hop: float = HOP
) -> str:
    """A valid score set written with the library's writer."""
    with ScoreSetWriter(str(uri), classes, hop) as w:
        for i, name in enumerate(clips):
            w.add(name, _matrix(i, n_classes=len(classes)))
    return str(uri)


def write_raw_shard(
    path: Path,
    rows: Sequence[tuple[str, Mapping[str, Sequence[float] | None]]],
    classes: Sequence[str] = CLASSES,
    hop: float = HOP,
    n_frames: Sequence[int | None] | None = None,
) -> None:
    """A shard written directly with pyarrow (the writer's schema and metadata, no checks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if n_frames is None:
        n_frames = [len(next(iter(r.values())) or []) for _, r in rows]
    data: dict[str, pa.Array] = {
        "filename": pa.array([n for n, _ in rows], pa.string()),
        "n_frames": pa.array(list(n_frames), pa.int32()),
    }
    for c in classes:
        data[c] = pa.array([r[c] for _, r in rows], pa.list_(pa.float32()))
    pq.write_table(pa.table(data, schema=shard_schema(classes, hop)), str(path))


def good_rows(
    clips: Sequence[str] = CLIPS, classes: Sequence[str] = CLASSES
) -> list[tuple[str, dict[str, list[float] | None]]]:
    rows: list[tuple[str, dict[str, list[float] | None]]] = []
    for i, name in enumerate(clips):
        m = _matrix(i, n_classes=len(classes))
        rows.append((name, {c: m[:, k].tolist() for k, c in enumerate(classes)}))
    return rows


def write_tsv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return str(path)


def write_gt(path: Path, rows: Sequence[Sequence[str]] = GT_ROWS) -> str:
    return write_tsv(path, rows, ("filename", "onset", "offset", "event_label"))


def write_durations(path: Path, rows: Sequence[Sequence[str]] | None = None) -> str:
    rows = rows if rows is not None else [(c, "1.0") for c in CLIPS]
    return write_tsv(path, rows, ("filename", "duration"))


def write_params(path: Path, obj: object) -> str:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def score_tsv_rows(seed: int, n_frames: int = N_FRAMES, hop: float = HOP) -> list[list[str]]:
    m = _matrix(seed, n_frames)
    return [[f"{i * hop:.3f}", f"{(i + 1) * hop:.3f}", *(f"{v:.6f}" for v in m[i])] for i in range(n_frames)]


def write_score_folder(folder: Path, n_clips: int = 3) -> Path:
    """A valid sed_scores_eval TSV folder: a.tsv, b.tsv, c.tsv."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_clips):
        write_tsv(folder / f"{'abc'[i]}.tsv", score_tsv_rows(i), ("onset", "offset", *CLASSES))
    return folder


def write_npz(
    path: Path,
    scores: np.ndarray,
    filenames: Sequence[str] = CLIPS,
    classes: Sequence[str] = CLASSES,
    hop: float = HOP,
    **extra: Any,
) -> str:
    arrays: dict[str, Any] = {
        "scores": scores,
        "filenames": np.array(filenames),
        "classes": np.array(classes),
        "frame_hop_s": np.float64(hop),
    }
    arrays.update(extra)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


# ---------------------------------------------------------------------------------------------
# Running the CLI


def fails(capsys: pytest.CaptureFixture[str], argv: Sequence[str], *needles: str) -> str:
    """Run the CLI; require exit 2, one ``sedtune: error:`` line naming every needle."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}, stderr: {err!r}"
    assert out == "", out
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"not exactly one line: {err!r}"
    line = err.rstrip("\n")
    assert line.startswith("sedtune: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def succeeds(capsys: pytest.CaptureFixture[str], argv: Sequence[str]) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def evaluate(scores: str, gt: str, *extra: str) -> list[str]:
    return ["evaluate", "--scores", scores, "--ground-truth", gt, *extra]


@pytest.fixture
def gt(tmp_path: Path) -> str:
    return write_gt(tmp_path / "gt.tsv")


@pytest.fixture
def scores(tmp_path: Path) -> str:
    return write_set(tmp_path / "scores")


def test_good_inputs_are_accepted(capsys, tmp_path, scores, gt):
    """The builders make valid inputs: every failure below comes from the one defect."""
    params = write_params(tmp_path / "params.json", GOOD_PARAMS)
    dur = write_durations(tmp_path / "durations.tsv")
    succeeds(capsys, evaluate(scores, gt, "--durations", dur, "--params", params))
    succeeds(capsys, ["apply", "--scores", scores, "--params", params, "--out", str(tmp_path / "events.tsv")])
    raw = tmp_path / "raw"
    write_raw_shard(raw / "part-00000.parquet", good_rows())
    succeeds(capsys, evaluate(str(raw), gt))
    succeeds(capsys, ["import", str(write_score_folder(tmp_path / "tsv")), str(tmp_path / "imp")])
    succeeds(capsys, evaluate(str(tmp_path / "imp"), gt))
    npz = write_npz(tmp_path / "s.npz", np.stack([_matrix(i) for i in range(3)]))
    succeeds(capsys, ["import", npz, str(tmp_path / "from_npz")])


# ---------------------------------------------------------------------------------------------
# Score values and shapes inside a shard


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        (float("nan"), "not finite"),
        (float("inf"), "not finite"),
        (float("-inf"), "not finite"),
        (1.5, "score 1.5 is outside [0, 1]"),
        (-0.1, "score -0.1 is outside [0, 1]"),
    ],
)
@pytest.mark.parametrize("command", ["evaluate", "apply"])
def test_bad_score_value_names_shard_clip_and_class(capsys, tmp_path, gt, bad, rule, command):
    rows = good_rows()
    rows[1][1]["Cat"][4] = bad  # type: ignore[index]
    root = tmp_path / "scores"
    write_raw_shard(root / "part-00000.parquet", rows)
    if command == "evaluate":
        argv = evaluate(str(root), gt)
    else:
        params = write_params(tmp_path / "params.json", GOOD_PARAMS)
        argv = ["apply", "--scores", str(root), "--params", params, "--out", str(tmp_path / "o.tsv")]
    fails(capsys, argv, "part-00000.parquet", "'b.wav'", "'Cat'", rule)
    assert not (tmp_path / "o.tsv").exists()


def test_class_lists_of_different_length_in_one_row(capsys, tmp_path, gt):
    rows = good_rows()
    rows[2][1]["Cat"] = rows[2][1]["Cat"][:-1]  # type: ignore[index]
    root = tmp_path / "scores"
    write_raw_shard(root / "part-00000.parquet", rows)
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "'c.wav'", "'Cat'", "differ in length")


def test_n_frames_disagrees_with_every_class_list(capsys, tmp_path, gt):
    root = tmp_path / "scores"
    write_raw_shard(root / "part-00000.parquet", good_rows(), n_frames=[10, 12, 10])
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "'b.wav'", "n_frames")


def test_null_n_frames(capsys, tmp_path, gt):
    root = tmp_path / "scores"
    write_raw_shard(root / "part-00000.parquet", good_rows(), n_frames=[10, None, 10])
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "'b.wav'", "n_frames")


def test_null_class_list(capsys, tmp_path, gt):
    rows = good_rows()
    rows[0][1]["Dog"] = None
    root = tmp_path / "scores"
    write_raw_shard(root / "part-00000.parquet", rows, n_frames=[10, 10, 10])
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "'a.wav'", "'Dog'", "missing")


# ---------------------------------------------------------------------------------------------
# Shards that disagree, duplicate clips, unreadable or foreign Parquet


def test_class_sets_differ_between_shards(capsys, tmp_path, gt):
    root = tmp_path / "scores"
    write_raw_shard(root / "part-00000.parquet", good_rows(CLIPS[:2]))
    write_raw_shard(
        root / "part-00001.parquet", good_rows(CLIPS[2:], ("Dog", "Bird")), classes=("Dog", "Bird")
    )
    fails(capsys, evaluate(str(root), gt), "part-00001.parquet", "Bird", "Cat", "part-00000.parquet")


def test_hop_differs_between_shards(capsys, tmp_path, gt):
    root = tmp_path / "scores"
    write_raw_shard(root / "part-00000.parquet", good_rows(CLIPS[:2]))
    write_raw_shard(root / "part-00001.parquet", good_rows(CLIPS[2:]), hop=0.05)
    fails(capsys, evaluate(str(root), gt), "part-00001.parquet", "frame_hop_s", "0.05")


@pytest.mark.parametrize("hop", ["0.0", "-0.1", "nan", "abc"])
def test_bad_hop_in_shard_metadata(capsys, tmp_path, gt, hop):
    root = tmp_path / "scores"
    write_raw_shard(root / "part-00000.parquet", good_rows())
    path = root / "part-00000.parquet"
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"sedtune.frame_hop_s"] = hop.encode()
    pq.write_table(table.replace_schema_metadata(meta), path)
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "frame_hop_s")


def test_class_metadata_not_a_list(capsys, tmp_path, gt):
    root = tmp_path / "scores"
    path = root / "part-00000.parquet"
    write_raw_shard(path, good_rows())
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"sedtune.classes"] = b'"Dog"'
    pq.write_table(table.replace_schema_metadata(meta), path)
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "sedtune.classes")


def test_duplicate_clip_across_shards(capsys, tmp_path, gt):
    root = tmp_path / "scores"
    write_raw_shard(root / "part-00000.parquet", good_rows(CLIPS[:2]))
    write_raw_shard(root / "part-00001.parquet", good_rows(("b.wav", "c.wav")))
    fails(
        capsys, evaluate(str(root), gt), "part-00001.parquet", "duplicate clip 'b.wav'", "part-00000.parquet"
    )


def test_duplicate_clip_within_a_shard(capsys, tmp_path, gt):
    root = tmp_path / "scores"
    write_raw_shard(root / "part-00000.parquet", good_rows(("a.wav", "b.wav", "b.wav", "c.wav")))
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "duplicate clip 'b.wav'")


def test_null_filename(capsys, tmp_path, gt):
    root = tmp_path / "scores"
    rows = good_rows()
    table = pa.table(
        {
            "filename": pa.array(["a.wav", None, "c.wav"], pa.string()),
            "n_frames": pa.array([10, 10, 10], pa.int32()),
            **{c: pa.array([r[c] for _, r in rows], pa.list_(pa.float32())) for c in CLASSES},
        },
    ).replace_schema_metadata(shard_schema(CLASSES, HOP).metadata)
    root.mkdir()
    pq.write_table(table, root / "part-00000.parquet")
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "filename")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_parquet(capsys, tmp_path, gt, damage):
    root = Path(write_set(tmp_path / "scores"))
    path = root / "part-00000.parquet"
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"not parquet at all\n" * 20, "empty": b""}[damage]
    )
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "not a readable Parquet file")


def test_corrupt_column_chunk(capsys, tmp_path, gt):
    """Footer intact, data pages damaged: caught when the class column is read."""
    root = tmp_path / "scores"
    path = root / "part-00000.parquet"
    root.mkdir()
    rows = good_rows()
    table = pa.table(
        {
            "filename": pa.array(CLIPS),
            "n_frames": pa.array([10] * 3, pa.int32()),
            **{c: pa.array([r[c] for _, r in rows], pa.list_(pa.float32())) for c in CLASSES},
        },
        schema=shard_schema(CLASSES, HOP),
    )
    pq.write_table(table, path, compression="none")
    data = bytearray(path.read_bytes())
    meta = pq.ParquetFile(path).metadata
    col = meta.row_group(0).column(3)  # Cat
    start = col.data_page_offset
    for i in range(start, start + col.total_compressed_size):
        data[i] = 0xFF
    path.write_bytes(bytes(data))
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet")


def test_parquet_that_is_not_a_sedtune_shard(capsys, tmp_path, gt):
    root = tmp_path / "scores"
    root.mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3]}), root / "part-00000.parquet")
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "not a sedtune score shard")


def test_shard_missing_a_class_column(capsys, tmp_path, gt):
    root = tmp_path / "scores"
    path = root / "part-00000.parquet"
    write_raw_shard(path, good_rows())
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["Cat"]), path)
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "'Cat'", "missing")


def test_class_column_of_wrong_type(capsys, tmp_path, gt):
    root = tmp_path / "scores"
    root.mkdir()
    schema = shard_schema(CLASSES, HOP)
    table = pa.table(
        {
            "filename": pa.array(CLIPS),
            "n_frames": pa.array([10] * 3, pa.int32()),
            "Dog": pa.array([[0.5] * 10] * 3, pa.list_(pa.float32())),
            "Cat": pa.array(["x"] * 3),
        },
    ).replace_schema_metadata(schema.metadata)
    pq.write_table(table, root / "part-00000.parquet")
    fails(capsys, evaluate(str(root), gt), "part-00000.parquet", "'Cat'", "list<float32>")


def test_missing_or_empty_score_set(capsys, tmp_path, gt):
    fails(capsys, evaluate(str(tmp_path / "nowhere"), gt), "nowhere", "not found")
    (tmp_path / "empty").mkdir()
    fails(capsys, evaluate(str(tmp_path / "empty"), gt), "empty", "no .parquet shards")


# ---------------------------------------------------------------------------------------------
# Scores against ground truth


def test_clip_in_ground_truth_without_scores(capsys, tmp_path):
    scores = write_set(tmp_path / "scores", clips=CLIPS[:2])
    gt = write_gt(tmp_path / "gt.tsv")
    fails(capsys, evaluate(scores, gt), "gt.tsv", "clip 'c.wav'", "no scores")


def test_clip_with_scores_but_not_in_ground_truth(capsys, tmp_path):
    scores = write_set(tmp_path / "scores", clips=(*CLIPS, "d.wav"))
    gt = write_gt(tmp_path / "gt.tsv")
    fails(capsys, evaluate(scores, gt), "gt.tsv", "clip 'd.wav'", "not in the ground truth")


def test_ground_truth_class_not_in_scores(capsys, tmp_path, scores):
    gt = write_gt(tmp_path / "gt.tsv", [*GT_ROWS, ("c.wav", "0.0", "0.3", "Bird")])
    fails(capsys, evaluate(scores, gt), "gt.tsv", "'Bird'")


def test_score_class_absent_from_ground_truth(capsys, tmp_path, scores):
    gt = write_gt(tmp_path / "gt.tsv", [GT_ROWS[0], ("b.wav", "", "", ""), GT_ROWS[2]])
    fails(capsys, evaluate(scores, gt), "gt.tsv", "'Cat'", "class sets differ")


# ---------------------------------------------------------------------------------------------
# Ground-truth and durations TSV


@pytest.mark.parametrize(
    ("row", "needles"),
    [
        (("b.wav", "0.6", "0.2", "Cat"), ("line 3", "offset 0.2", "before onset 0.6")),
        (("b.wav", "-0.2", "0.6", "Cat"), ("line 3", "onset -0.2", "negative")),
        (("b.wav", "abc", "0.6", "Cat"), ("line 3", "onset 'abc'", "not a number")),
        (("b.wav", "0.2", "nan", "Cat"), ("line 3", "offset 'nan'", "not finite")),
        (("b.wav", "0.2", "0.6"), ("line 3", "expected 4", "got 3")),
        (("b.wav", "0.2", "0.6", "Cat", "extra"), ("line 3", "expected 4", "got 5")),
        (("b.wav", "0.2", "0.6", ""), ("line 3", "event_label")),
        (("", "0.2", "0.6", "Cat"), ("line 3", "filename")),
    ],
)
def test_malformed_ground_truth_row(capsys, tmp_path, scores, row, needles):
    gt = write_gt(tmp_path / "gt.tsv", [GT_ROWS[0], row, GT_ROWS[2]])
    fails(capsys, evaluate(scores, gt), "gt.tsv", *needles)


def test_ground_truth_wrong_header(capsys, tmp_path, scores):
    gt = write_tsv(tmp_path / "gt.tsv", GT_ROWS, ("filename", "start", "end", "label"))
    fails(capsys, evaluate(scores, gt), "gt.tsv", "line 1", "header")


def test_ground_truth_empty_missing_or_binary(capsys, tmp_path, scores):
    (tmp_path / "empty.tsv").write_text("")
    fails(capsys, evaluate(scores, str(tmp_path / "empty.tsv")), "empty.tsv", "empty")
    fails(capsys, evaluate(scores, str(tmp_path / "none.tsv")), "none.tsv", "not found")
    (tmp_path / "bin.tsv").write_bytes(b"\xff\xfe\x00garbage")
    fails(capsys, evaluate(scores, str(tmp_path / "bin.tsv")), "bin.tsv", "UTF-8")


@pytest.mark.parametrize(
    ("rows", "needles"),
    [
        ([("a.wav", "1.0"), ("b.wav", "abc"), ("c.wav", "1.0")], ("line 3", "duration 'abc'")),
        ([("a.wav", "1.0"), ("b.wav", "0"), ("c.wav", "1.0")], ("line 3", "duration 0.0", "> 0")),
        ([("a.wav", "1.0"), ("b.wav", "-1"), ("c.wav", "1.0")], ("line 3", "duration -1.0")),
        ([("a.wav", "1.0"), ("a.wav", "1.0"), ("c.wav", "1.0")], ("line 3", "duplicate clip 'a.wav'")),
        ([("a.wav", "1.0", "x"), ("b.wav", "1.0"), ("c.wav", "1.0")], ("line 2", "expected 2")),
        ([("a.wav", "1.0"), ("c.wav", "1.0")], ("clip 'b.wav'", "no duration")),
    ],
)
def test_bad_durations(capsys, tmp_path, scores, gt, rows, needles):
    dur = write_durations(tmp_path / "durations.tsv", rows)
    fails(capsys, evaluate(scores, gt, "--durations", dur), *needles)
    if "no duration" not in needles[-1]:
        fails(
            capsys,
            [
                "apply",
                "--scores",
                scores,
                "--params",
                write_params(tmp_path / "p.json", GOOD_PARAMS),
                "--durations",
                dur,
                "--out",
                str(tmp_path / "o.tsv"),
            ],
            "durations.tsv",
            *needles,
        )


def test_durations_wrong_header(capsys, tmp_path, scores, gt):
    dur = write_tsv(tmp_path / "durations.tsv", [("a.wav", "1.0")], ("file", "seconds"))
    fails(capsys, evaluate(scores, gt, "--durations", dur), "durations.tsv", "line 1", "header")


# ---------------------------------------------------------------------------------------------
# Parameter files


def _with_class(label: str, **fields: Any) -> dict[str, Any]:
    obj = json.loads(json.dumps(GOOD_PARAMS))
    obj["classes"][label].update(fields)
    return obj


def _drop(obj: dict[str, Any], key: str) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    obj.pop(key)
    return obj


PARAM_CASES: list[tuple[str, object, tuple[str, ...]]] = [
    ("even kernel", _with_class("Dog", median_filter_frames=4), ("Dog", "median_filter_frames", "4")),
    ("kernel 0", _with_class("Cat", median_filter_frames=0), ("Cat", "median_filter_frames", "0")),
    ("kernel not integer", _with_class("Cat", median_filter_frames=2.5), ("Cat", "median_filter_frames")),
    ("kernel string", _with_class("Cat", median_filter_frames="3"), ("Cat", "median_filter_frames")),
    ("threshold 0", _with_class("Dog", threshold=0), ("Dog", "threshold", "(0, 1)")),
    ("threshold 1", _with_class("Dog", threshold=1), ("Dog", "threshold", "(0, 1)")),
    ("threshold 1.2", _with_class("Cat", threshold=1.2), ("Cat", "threshold", "1.2")),
    ("threshold negative", _with_class("Cat", threshold=-0.1), ("Cat", "threshold", "-0.1")),
    ("threshold string", _with_class("Cat", threshold="0.5"), ("Cat", "threshold")),
    (
        "threshold missing",
        {
            **GOOD_PARAMS,
            "classes": {"Dog": {"median_filter_frames": 3}, "Cat": GOOD_PARAMS["classes"]["Cat"]},
        },
        ("Dog", "threshold", "required"),
    ),
    ("threshold_off above threshold", _with_class("Dog", threshold_off=0.7), ("Dog", "threshold_off", "0.7")),
    ("negative min duration", _with_class("Dog", min_duration_s=-1), ("Dog", "min_duration_s")),
    ("negative fill gap", _with_class("Dog", fill_gap_s=-0.5), ("Dog", "fill_gap_s")),
    ("unknown field", _with_class("Dog", kernel=3), ("Dog", "unknown field", "kernel")),
    (
        "unknown class",
        {**GOOD_PARAMS, "classes": {**GOOD_PARAMS["classes"], "Bird": {"threshold": 0.5}}},
        ("unknown class 'Bird'",),
    ),
    ("missing class", {**GOOD_PARAMS, "classes": {"Dog": GOOD_PARAMS["classes"]["Dog"]}}, ("class 'Cat'",)),
    ("no classes", {**GOOD_PARAMS, "classes": {}}, ("classes",)),
    (
        "class not an object",
        {**GOOD_PARAMS, "classes": {"Dog": 0.5, "Cat": {"threshold": 0.5}}},
        ("Dog", "must be an object"),
    ),
    ("wrong format tag", {**GOOD_PARAMS, "format": "sedtune.params/3"}, ("format", "sedtune.params/3")),
    ("no format tag", _drop(GOOD_PARAMS, "format"), ("format",)),
    ("hop mismatch", {**GOOD_PARAMS, "frame_hop_s": 0.064}, ("frame_hop_s", "0.064", "0.1")),
    ("hop zero", {**GOOD_PARAMS, "frame_hop_s": 0}, ("frame_hop_s",)),
    ("not an object", [1, 2, 3], ("JSON object",)),
    ("invalid JSON", '{"format": "sedtune.params/1", "classes": {', ("not valid JSON",)),
    ("NaN threshold", _with_class("Dog", threshold=float("nan")), ("Dog", "threshold")),
]


@pytest.mark.parametrize("command", ["evaluate", "apply"])
@pytest.mark.parametrize(("obj", "needles"), [c[1:] for c in PARAM_CASES], ids=[c[0] for c in PARAM_CASES])
def test_invalid_parameter_file(capsys, tmp_path, scores, gt, command, obj, needles):
    params = write_params(tmp_path / "params.json", obj)
    out = tmp_path / "events.tsv"
    if command == "evaluate":
        argv = evaluate(scores, gt, "--params", params)
    else:
        argv = ["apply", "--scores", scores, "--params", params, "--out", str(out)]
    fails(capsys, argv, "params.json", *needles)
    assert not out.exists()


@pytest.mark.parametrize("command", ["evaluate", "apply"])
def test_parameter_file_missing_or_a_directory(capsys, tmp_path, scores, gt, command):
    for path, needle in ((tmp_path / "none.json", "not found"), (tmp_path, "")):
        if command == "evaluate":
            argv = evaluate(scores, gt, "--params", str(path))
        else:
            argv = ["apply", "--scores", scores, "--params", str(path), "--out", str(tmp_path / "o.tsv")]
        fails(capsys, argv, str(path), needle)


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--median-filter-frames", "4"], "median_filter_frames"),
        (["--threshold", "1.2"], "threshold"),
        (["--threshold", "0.5", "--threshold-off", "0.6"], "threshold_off"),
    ],
)
def test_invalid_command_line_parameters(capsys, scores, gt, flags, field):
    fails(capsys, evaluate(scores, gt, *flags), "command line", field)


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_apply_output_path_unusable(capsys, tmp_path, scores, where):
    params = write_params(tmp_path / "params.json", GOOD_PARAMS)
    out = tmp_path / "no" / "events.tsv" if where == "missing directory" else tmp_path
    fails(
        capsys,
        ["apply", "--scores", scores, "--params", params, "--out", str(out)],
        str(out),
        "existing directory",
    )


# ---------------------------------------------------------------------------------------------
# `sedtune import` of TSV folders


def _damage(folder: Path, name: str, line: int, col: int, value: str) -> None:
    path = folder / name
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split("\t")
    cells[col] = value
    lines[line - 1] = "\t".join(cells)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("col", "value", "needles"),
    [
        (3, "nan", ("line 5", "'Cat'", "not finite")),
        (2, "inf", ("line 5", "'Dog'", "not finite")),
        (3, "1.5", ("line 5", "'Cat'", "outside [0, 1]")),
        (2, "-0.1", ("line 5", "'Dog'", "outside [0, 1]")),
        (3, "abc", ("line 5", "'abc'", "not a number")),
        (0, "0.35", ("line 5", "onset 0.35", "gapless")),
        (0, "nan", ("line 5", "onset nan", "gapless")),
    ],
)
def test_import_bad_tsv_cell(capsys, tmp_path, col, value, needles):
    folder = write_score_folder(tmp_path / "tsv")
    _damage(folder, "b.tsv", 5, col, value)
    out = tmp_path / "out"
    fails(capsys, ["import", str(folder), str(out)], "b.tsv", *needles)
    assert not list(out.glob("*.parquet")) if out.exists() else True


def test_import_ragged_tsv_row(capsys, tmp_path):
    folder = write_score_folder(tmp_path / "tsv")
    path = folder / "b.tsv"
    lines = path.read_text().splitlines()
    lines[6] = lines[6].rsplit("\t", 1)[0]
    path.write_text("\n".join(lines) + "\n")
    fails(capsys, ["import", str(folder), str(tmp_path / "out")], "b.tsv", "line 7", "3 fields")


def test_import_class_headers_differ(capsys, tmp_path):
    folder = write_score_folder(tmp_path / "tsv")
    write_tsv(folder / "c.tsv", score_tsv_rows(2), ("onset", "offset", "Dog", "Bird"))
    fails(capsys, ["import", str(folder), str(tmp_path / "out")], "c.tsv", "Bird", "Cat", "a.tsv")


def test_import_hop_differs(capsys, tmp_path):
    folder = write_score_folder(tmp_path / "tsv")
    write_tsv(folder / "c.tsv", score_tsv_rows(2, hop=0.05), ("onset", "offset", *CLASSES))
    fails(capsys, ["import", str(folder), str(tmp_path / "out")], "c.tsv", "frame hop")


@pytest.mark.parametrize(
    ("header", "rows", "needles"),
    [
        (("start", "end", *CLASSES), score_tsv_rows(1), ("line 1", "header")),
        (("onset", "offset"), [r[:2] for r in score_tsv_rows(1)], ("line 1", "header")),
        (("onset", "offset", *CLASSES), [], ("no frames",)),
        (("onset", "offset", "Dog", "Dog"), score_tsv_rows(1), ("'Dog'", "twice")),
        (("onset", "offset", "Dog", "n_frames"), score_tsv_rows(1), ("'n_frames'", "reserved")),
    ],
)
def test_import_bad_tsv_file(capsys, tmp_path, header, rows, needles):
    folder = write_score_folder(tmp_path / "tsv", n_clips=1)
    write_tsv(folder / "b.tsv", rows, header)
    fails(capsys, ["import", str(folder), str(tmp_path / "out")], "b.tsv", *needles)


def test_import_first_frame_has_no_duration(capsys, tmp_path):
    folder = write_score_folder(tmp_path / "tsv", n_clips=1)
    _damage(folder, "a.tsv", 2, 1, "0.0")
    fails(capsys, ["import", str(folder), str(tmp_path / "out")], "a.tsv", "line 2", "offset")


def test_import_source_missing_or_empty(capsys, tmp_path):
    fails(capsys, ["import", str(tmp_path / "none"), str(tmp_path / "out")], "none")
    (tmp_path / "emptydir").mkdir()
    fails(capsys, ["import", str(tmp_path / "emptydir"), str(tmp_path / "out")], "emptydir", "no .tsv files")


# ---------------------------------------------------------------------------------------------
# `sedtune import` of .npz files


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        (np.nan, "not finite"),
        (np.inf, "not finite"),
        (1.5, "score 1.5 is outside [0, 1]"),
        (-0.1, "score -0.1 is outside [0, 1]"),
    ],
)
def test_import_npz_bad_score(capsys, tmp_path, bad, rule):
    scores = np.stack([_matrix(i) for i in range(3)])
    scores[2, 7, 1] = bad
    npz = write_npz(tmp_path / "s.npz", scores)
    out = tmp_path / "out"
    fails(capsys, ["import", npz, str(out)], "s.npz", "'c.wav'", "'Cat'", rule)
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"scores": np.zeros((3, 10))}, ("'scores'", "(clips, frames, classes)")),
        ({"scores": np.zeros((3, 10, 3))}, ("'scores'", "3 classes")),
        ({"scores": None}, ("'scores'", "missing")),
        ({"frame_hop_s": None}, ("'frame_hop_s'", "missing")),
        ({"frame_hop_s": np.float64(0.0)}, ("frame_hop_s",)),
        ({"frame_hop_s": np.array([0.1, 0.2])}, ("frame_hop_s",)),
        ({"filenames": np.array(["a.wav", "b.wav"])}, ("filenames",)),
        ({"filenames": np.array(["a.wav", "b.wav", "a.wav"])}, ("'a.wav'", "duplicate")),
        ({"classes": np.array(["Dog", "Dog"])}, ("'Dog'", "twice")),
    ],
)
def test_import_npz_malformed(capsys, tmp_path, kwargs, needles):
    arrays: dict[str, Any] = {
        "scores": np.stack([_matrix(i) for i in range(3)]),
        "filenames": CLIPS,
        "classes": CLASSES,
        "hop": HOP,
    }
    if "frame_hop_s" in kwargs:
        arrays["hop"] = kwargs.pop("frame_hop_s")
    arrays.update(kwargs)
    path = tmp_path / "s.npz"
    if arrays["hop"] is None:
        np.savez(
            path,
            scores=arrays["scores"],
            filenames=np.array(arrays["filenames"]),
            classes=np.array(arrays["classes"]),
        )
    elif arrays["scores"] is None:
        np.savez(
            path,
            filenames=np.array(arrays["filenames"]),
            classes=np.array(arrays["classes"]),
            frame_hop_s=arrays["hop"],
        )
    else:
        np.savez(
            path,
            scores=arrays["scores"],
            filenames=np.array(arrays["filenames"]),
            classes=np.array(arrays["classes"]),
            frame_hop_s=arrays["hop"],
        )
    fails(capsys, ["import", str(path), str(tmp_path / "out")], "s.npz", *needles)


def test_import_npz_not_a_zip(capsys, tmp_path):
    path = tmp_path / "s.npz"
    path.write_bytes(b"garbage" * 10)
    fails(capsys, ["import", str(path), str(tmp_path / "out")], "s.npz", "not a .npz file")
    fails(capsys, ["import", str(tmp_path / "none.npz"), str(tmp_path / "out")], "none.npz", "not found")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Nothing stored is lost; nothing half-written looks valid


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


@pytest.mark.parametrize("source", ["tsv", "npz"])
def test_import_refuses_a_non_empty_output_directory(capsys, tmp_path, gt, source):
    existing = tmp_path / "scores"
    # Four one-clip shards: a new 3-clip import would overwrite part-00000..2 and keep part-00003.
    with ScoreSetWriter(str(existing), CLASSES, HOP, clips_per_shard=1) as w:
        for i, name in enumerate((*CLIPS, "d.wav")):
            w.add(name, _matrix(10 + i))
    before = _snapshot(existing)
    if source == "tsv":
        src = str(write_score_folder(tmp_path / "tsv"))
    else:
        src = write_npz(tmp_path / "s.npz", np.stack([_matrix(i) for i in range(3)]))
    fails(capsys, ["import", src, str(existing), "--clips-per-shard", "1"], "scores", "not empty")
    assert _snapshot(existing) == before
    assert ScoreSet.open(str(existing)).filenames == [*CLIPS, "d.wav"]


def test_import_refuses_an_output_path_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "scores"
    target.write_text("keep me")
    src = str(write_score_folder(tmp_path / "tsv"))
    fails(capsys, ["import", src, str(target)], "scores")
    assert target.read_text() == "keep me"


def test_import_into_an_existing_empty_directory_works(capsys, tmp_path):
    (tmp_path / "scores").mkdir()
    src = str(write_score_folder(tmp_path / "tsv"))
    succeeds(capsys, ["import", src, str(tmp_path / "scores")])
    assert len(ScoreSet.open(str(tmp_path / "scores")).filenames) == 3


@pytest.mark.parametrize("source", ["tsv", "npz"])
def test_failed_import_leaves_no_half_written_set(capsys, tmp_path, gt, source):
    out = tmp_path / "out"
    if source == "tsv":
        folder = write_score_folder(tmp_path / "tsv")
        _damage(folder, "c.tsv", 4, 2, "nan")  # the last clip, after two shards are written
        src, needle = str(folder), "c.tsv"
    else:
        scores = np.stack([_matrix(i) for i in range(3)])
        scores[2, 0, 0] = np.nan
        src, needle = write_npz(tmp_path / "s.npz", scores), "'c.wav'"
    fails(capsys, ["import", src, str(out), "--clips-per-shard", "1"], needle)
    assert not out.exists() or not any(out.iterdir())
    fails(capsys, evaluate(str(out), gt), "out")


def test_writer_error_inside_context_removes_written_shards(tmp_path):
    out = tmp_path / "out"
    with (
        pytest.raises(SedtuneInputError, match=r"'b\.wav'"),
        ScoreSetWriter(str(out), CLASSES, HOP, clips_per_shard=1) as w,
    ):
        w.add("a.wav", _matrix(0))
        w.add("b.wav", np.full((N_FRAMES, 2), np.nan))
    assert not list(out.glob("*.parquet"))
    assert os.path.isdir(out)  # the directory itself is left; it holds nothing


def test_import_numpy_failing_after_some_shards_removes_them(tmp_path):
    """The writer's own check fires after two one-clip shards: they are deleted again."""
    from envs.importers import import_numpy

    out = tmp_path / "out"
    bad = _matrix(2)
    bad[3, 0] = np.nan
    with pytest.raises(SedtuneInputError, match=r"'c\.wav'"):
        import_numpy(str(out), [_matrix(0), _matrix(1), bad], CLIPS, CLASSES, HOP, clips_per_shard=1)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Issue 14's smaller items: apply with durations missing a clip, deeply nested parameter files,
# synth onto a file


def test_apply_refuses_durations_missing_a_clip(capsys, tmp_path, scores):
    params = write_params(tmp_path / "params.json", GOOD_PARAMS)
    dur = write_durations(tmp_path / "durations.tsv", [(c, "1.0") for c in CLIPS[:2]])
    out = tmp_path / "events.tsv"
    fails(
        capsys,
        ["apply", "--scores", scores, "--params", params, "--durations", dur, "--out", str(out)],
        dur,
        "'c.wav'",
        "no duration",
    )
    assert not out.exists()


def test_deeply_nested_parameter_file(capsys, tmp_path, scores):
    params = write_params(tmp_path / "params.json", "[" * 100_000 + "]" * 100_000)
    out = tmp_path / "events.tsv"
    fails(capsys, ["apply", "--scores", scores, "--params", params, "--out", str(out)], params, "nested")
    assert not out.exists()


def test_synth_onto_a_file(capsys, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    fails(capsys, ["synth", str(taken), "--clips", "2", "--classes", "2"], str(taken), "is a file")
    assert taken.read_text() == "mine"
