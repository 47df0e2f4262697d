"""The synthetic generator: determinism, score-set layout, ground truth, validation."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from envs.errors import SedtuneInputError
from envs.groundtruth import read_durations, read_ground_truth
from envs.scoreset import ScoreSet
from envs.synth import SynthResult, generate
from envs.synth_config import DESED_CLASSES, SynthConfig

# 30 clips in 3 shards, several clips without events.
SMALL = SynthConfig(n_clips=30, n_classes=4, clips_per_shard=12, empty_clip_fraction=0.3, seed=7)


def _matrices(result: SynthResult) -> dict[str, np.ndarray]:
    return ScoreSet.open(result.scores_uri).read_matrices()


def _same_scores(a: SynthResult, b: SynthResult) -> bool:
    ma, mb = _matrices(a), _matrices(b)
    return list(ma) == list(mb) and all(ma[k].tobytes() == mb[k].tobytes() for k in ma)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return generate(str(tmp_path_factory.mktemp("synth")), SMALL)


def test_same_seed_gives_identical_files(small: SynthResult, tmp_path: Path) -> None:
    again = generate(str(tmp_path), SMALL)
    assert _same_scores(small, again)
    assert Path(small.ground_truth_path).read_bytes() == Path(again.ground_truth_path).read_bytes()
    assert Path(small.durations_path).read_bytes() == Path(again.durations_path).read_bytes()
    assert (again.n_clips, again.n_events, again.classes) == (small.n_clips, small.n_events, small.classes)


def test_other_seed_gives_other_files(small: SynthResult, tmp_path: Path) -> None:
    other = generate(str(tmp_path), replace(SMALL, seed=8))
    assert not _same_scores(small, other)
    assert Path(small.ground_truth_path).read_bytes() != Path(other.ground_truth_path).read_bytes()


def test_sharding_does_not_change_values(small: SynthResult, tmp_path: Path) -> None:
    one_shard = generate(str(tmp_path), replace(SMALL, clips_per_shard=100))
    assert len(ScoreSet.open(one_shard.scores_uri).shards) == 1
    assert _same_scores(small, one_shard)


def test_score_set_layout(small: SynthResult) -> None:
    ss = ScoreSet.open(small.scores_uri)
    assert len(ss.shards) == 3  # 30 clips, 12 per shard
    assert ss.classes == list(DESED_CLASSES[:4]) == small.classes
    assert ss.frame_hop_s == SMALL.frame_hop_s
    assert ss.filenames == [f"synth_{i:06d}.wav" for i in range(30)]
    assert small.n_clips == 30
    for label in ss.classes:
        col = ss.read_class(label)
        assert col.values.dtype == np.float32
        assert np.all(np.diff(col.offsets) == 157)  # ceil(10 / 0.064)
        assert col.values.min() >= 0.0 and col.values.max() <= 1.0


def test_ground_truth_is_valid(small: SynthResult) -> None:
    gt = read_ground_truth(small.ground_truth_path)
    assert list(gt.filenames) == ScoreSet.open(small.scores_uri).filenames
    assert set(gt.labels) <= set(small.classes)
    assert sum(len(ev) for ev in gt.events.values()) == small.n_events > 0
    for ev in gt.events.values():
        assert np.all(ev.onset_s >= 0) and np.all(ev.offset_s <= SMALL.clip_duration_s)
        assert np.all(ev.onset_s < ev.offset_s)
        same_clip = ev.clip[1:] == ev.clip[:-1]
        assert np.all(ev.offset_s[:-1][same_clip] <= ev.onset_s[1:][same_clip])  # no overlap
    with_events = {int(c) for ev in gt.events.values() for c in ev.clip}
    assert len(with_events) < len(gt.filenames)  # some clips have no event
    text = Path(small.ground_truth_path).read_text().splitlines()
    assert text[0] == "filename\tonset\toffset\tevent_label"
    assert any(line.endswith("\t\t\t") for line in text[1:])
    assert all(len(f.split(".")[1]) == 3 for line in text[1:] for f in line.split("\t")[1:3] if f)


def test_durations(small: SynthResult) -> None:
    durations = read_durations(small.durations_path)
    assert list(durations) == ScoreSet.open(small.scores_uri).filenames
    assert set(durations.values()) == {SMALL.clip_duration_s}


def test_progress_counts_every_clip(tmp_path: Path) -> None:
    calls: list[int] = []
    generate(str(tmp_path), SynthConfig(n_clips=5, n_classes=2), progress=calls.append)
    assert sum(calls) == 5


def test_scores_follow_events(small: SynthResult) -> None:
    """Frames inside events score higher than frames outside, class by class."""
    gt = read_ground_truth(small.ground_truth_path)
    ss = ScoreSet.open(small.scores_uri)
    centres = (np.arange(157) + 0.5) * SMALL.frame_hop_s
    for label, ev in gt.events.items():
        col = ss.read_class(label)
        active = np.zeros(col.values.shape, dtype=bool)
        for c, a, b in zip(ev.clip, ev.onset_s, ev.offset_s, strict=True):
            active[col.offsets[c] : col.offsets[c + 1]] |= (centres > a) & (centres < b)
        assert col.values[active].mean() > col.values[~active].mean() + 0.2


def test_best_threshold_differs_between_classes(small: SynthResult) -> None:
    """Miscalibration: the best frame-level threshold is not 0.5 for every class."""
    gt = read_ground_truth(small.ground_truth_path)
    ss = ScoreSet.open(small.scores_uri)
    centres = (np.arange(157) + 0.5) * SMALL.frame_hop_s
    grid = np.arange(0.05, 0.96, 0.05)
    best = []
    for label, ev in gt.events.items():
        col = ss.read_class(label)
        ref = np.zeros(col.values.shape, dtype=bool)
        for c, a, b in zip(ev.clip, ev.onset_s, ev.offset_s, strict=True):
            ref[col.offsets[c] : col.offsets[c + 1]] |= (centres > a) & (centres < b)
        sys_on = col.values[None, :] > grid[:, None]
        tp = (sys_on & ref).sum(axis=1)
        f1 = 2 * tp / (sys_on.sum(axis=1) + ref.sum())
        best.append(float(grid[np.argmax(f1)]))
    assert len(set(best)) > 1
    assert max(abs(b - 0.5) for b in best) >= 0.15


def test_class_names() -> None:
    assert SynthConfig(n_classes=10).classes == list(DESED_CLASSES)
    assert SynthConfig(n_classes=12).classes[:2] == ["class_000", "class_001"]
    assert SynthConfig(n_classes=2, class_names=("a", "b")).classes == ["a", "b"]


def test_frame_count_rounding() -> None:
    assert SynthConfig().n_frames == 157
    assert SynthConfig(clip_duration_s=1.1, frame_hop_s=0.1).n_frames == 11


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"n_clips": 0}, "n_clips"),
        ({"n_clips": 2.5}, "n_clips"),
        ({"frame_hop_s": 0.0}, "frame_hop_s"),
        ({"seed": -1}, "seed"),
        ({"empty_clip_fraction": 1.5}, "empty_clip_fraction"),
        ({"gain_logit_range": (3.0, 1.0)}, "gain_logit_range"),
        ({"class_names": ("a",)}, "class_names"),
        ({"n_classes": 2, "class_names": ("a", "a")}, "class_names"),
        ({"event_rate_per_clip": (1.0,)}, "event_rate_per_clip"),
        ({"noise_correlation_s": 0.0}, "noise_correlation_s"),
    ],
)
def test_invalid_config_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(SedtuneInputError, match=field):
        SynthConfig(**changes)  # type: ignore[arg-type]


def test_refuses_to_mix_with_old_shards(tmp_path: Path) -> None:
    cfg = SynthConfig(n_clips=4, n_classes=2, clips_per_shard=2)
    generate(str(tmp_path), cfg)
    with pytest.raises(SedtuneInputError, match=r"already (holds|exists)"):
        generate(str(tmp_path), cfg)
    result = generate(str(tmp_path), SynthConfig(n_clips=2, n_classes=2), overwrite=True)
    assert ScoreSet.open(result.scores_uri).filenames == ["synth_000000.wav", "synth_000001.wav"]


def test_never_replaces_a_users_ground_truth(tmp_path: Path) -> None:
    mine = tmp_path / "ground_truth.tsv"
    mine.write_text("filename\tonset\toffset\tevent_label\nmy.wav\t0.0\t1.0\tDog\n")
    with pytest.raises(SedtuneInputError, match=r"ground_truth\.tsv already exists"):
        generate(str(tmp_path), SynthConfig(n_clips=2, n_classes=2))
    assert mine.read_text().endswith("my.wav\t0.0\t1.0\tDog\n")
    assert not (tmp_path / "scores").exists()


def test_refuses_a_file_as_out_dir(tmp_path: Path) -> None:
    f = tmp_path / "taken"
    f.write_text("x")
    with pytest.raises(SedtuneInputError, match="is a file"):
        generate(str(f), SynthConfig(n_clips=2, n_classes=2))
    assert f.read_text() == "x"


# ------------------------------------------------ atomic output, size limits (issue 14)

# 1000 s clips: 15625 frames x 8 classes, so a chunk is 16 clips and 20 clips are two chunks.
LONG = SynthConfig(n_clips=20, n_classes=8, clip_duration_s=1000.0, clips_per_shard=5)


class _Stop(KeyboardInterrupt):
    pass


def _stop_after_first_chunk(n: int) -> None:
    raise _Stop


def _names(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def test_a_set_appears_only_when_complete(tmp_path: Path) -> None:
    assert LONG.chunk_clips < LONG.n_clips
    with pytest.raises(_Stop):
        generate(str(tmp_path / "set"), LONG, progress=_stop_after_first_chunk)
    assert _names(tmp_path) == []  # no partial set, no staging folder
    generate(str(tmp_path / "set"), LONG)
    assert _names(tmp_path) == ["set"]
    assert _names(tmp_path / "set") == ["durations.tsv", "ground_truth.tsv", "scores"]


def test_an_interrupted_overwrite_keeps_the_old_set(tmp_path: Path) -> None:
    old = generate(str(tmp_path), SynthConfig(n_clips=4, n_classes=2))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(_Stop):
        generate(str(tmp_path), LONG, progress=_stop_after_first_chunk, overwrite=True)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert ScoreSet.open(old.scores_uri).filenames == [f"synth_{i:06d}.wav" for i in range(4)]


def test_other_files_in_out_dir_stay(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    res = generate(str(tmp_path), SynthConfig(n_clips=3, n_classes=2))
    assert _names(tmp_path) == ["durations.tsv", "ground_truth.tsv", "notes.txt", "scores"]
    assert (tmp_path / "notes.txt").read_text() == "mine" and res.n_clips == 3


def test_too_many_cells_is_one_line_and_nothing_written(tmp_path: Path, capsys) -> None:
    from service.cli import main

    out = tmp_path / "huge"
    assert main(["synth", str(out), "--clips", str(10**12)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1000000000000 clips x 10 classes x 157 frames" in err
    assert "the most one set may hold is 1e+10" in err
    assert not out.exists() and _names(tmp_path) == []


def test_more_than_the_free_space_is_refused(tmp_path: Path, monkeypatch) -> None:
    import shutil

    import envs.synth as synth

    free = synth.estimated_bytes(SMALL) - 1
    monkeypatch.setattr(synth.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12, free))
    with pytest.raises(SedtuneInputError, match=r"needs about .* GB in .*, but only .* GB are free there"):
        generate(str(tmp_path / "deep" / "set"), SMALL)
    assert _names(tmp_path) == []


def _synth_process(out: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "service.cli", "synth", str(out), "--clips", "4000", "--classes", "10",
            "--clips-per-shard", "100"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=out.parent)


def _until_shards(proc: subprocess.Popen[bytes], parent: Path, deadline_s: float = 60.0) -> None:
    """Poll until the staging folder holds a shard (the set is being written)."""
    end = time.monotonic() + deadline_s
    while not glob.glob(str(parent / ".set.synth-staging-*" / "scores" / "*.parquet")):
        assert proc.poll() is None, "synth ended before it was stopped"
        assert time.monotonic() < end, "no shard written in time"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.01)


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGKILL, -9)],
    ids=["TERM", "INT", "KILL"],
)
def test_a_stopped_synth_leaves_nothing_at_out(tmp_path: Path, signum: int, code: int) -> None:
    out = tmp_path / "set"
    proc = _synth_process(out)
    _until_shards(proc, tmp_path)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert not out.exists()
    if signum == signal.SIGKILL:  # nothing could clean up: the staging folder stays beside it
        assert [n.startswith(".set.synth-staging-") for n in _names(tmp_path)] == [True]
    else:
        name = signal.Signals(signum).name
        assert err.decode().splitlines()[-1] == f"sedtune: interrupted ({name}); no results written"
        assert _names(tmp_path) == []
