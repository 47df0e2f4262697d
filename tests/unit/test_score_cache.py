"""The cache of converted score sets (envs/scorecache.py), issue 13.

Keyed by content: a second run converts nothing (also from a fresh process), a change of
content is a new key even at the same size and mtime. A damaged or partial entry is never
read, a killed conversion's leftovers are never used, concurrent runs convert once (and
without a lock, one whole entry still wins). The location is documented and overridable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import envs.scorecache as sc
from envs.importers import import_tsv_folder
from envs.scoreset import ScoreSet
from service.cli import main
from tests.conftest import ROOT
from tests.unit.score_formats_support import (
    cache_entries,
    cache_entries_of,
    cache_fixture,  # noqa: F401  (the autouse `cache` fixture)
    conversions_fixture,  # noqa: F401  (the `conversions` fixture)
    evaluate_json,
    subset_fixture,  # noqa: F401  (the `subset` fixture)
)


def test_second_run_converts_nothing(tmp_path, capsys, subset, cache, conversions) -> None:
    first = evaluate_json(capsys, subset["scores"], subset)
    [key] = cache_entries_of(cache)
    entry = cache / key
    stamps = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    # a fresh process: nothing remembered, the INFO log line of a conversion absent
    env = {**os.environ, sc.CACHE_ENV: str(cache.parent)}
    argv = [sys.executable, "-m", "service.cli", "-v", "evaluate", "--scores", subset["scores"],
            "--ground-truth", subset["ground_truth"], "--durations", subset["durations"], "--json"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == first
    assert "converted" not in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == stamps
    # and in this process again
    assert evaluate_json(capsys, subset["scores"], subset) == first
    assert conversions == [subset["scores"]]


def test_first_run_logs_its_conversion(capsys, subset, caplog) -> None:
    caplog.set_level("INFO", logger="envs.scorecache")
    path = sc.resolve_scores(subset["scores"])
    assert any("converted" in r.getMessage() and subset["scores"] in r.getMessage() for r in caplog.records)
    caplog.clear()
    assert sc.resolve_scores(subset["scores"]) == path
    assert not caplog.records


def _flip_a_byte(entry: Path) -> None:
    shard = entry / "part-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))


def _truncate(entry: Path) -> None:
    shard = entry / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:100])


def _other_key(entry: Path) -> None:
    manifest = json.loads((entry / sc.MANIFEST).read_text())
    manifest["key"] = "0" * 32
    (entry / sc.MANIFEST).write_text(json.dumps(manifest))


CORRUPTIONS = {
    "no manifest (killed before it was written)": lambda e: (e / sc.MANIFEST).unlink(),
    "empty folder": lambda e: [p.unlink() for p in e.iterdir()],
    "truncated shard": _truncate,
    "shard with a changed byte": _flip_a_byte,
    "shard missing": lambda e: (e / "part-00000.parquet").unlink(),
    "extra shard": lambda e: shutil.copy(e / "part-00000.parquet", e / "part-00001.parquet"),
    "manifest of another key": _other_key,
    "manifest not JSON": lambda e: (e / sc.MANIFEST).write_text("{"),
}


@pytest.mark.parametrize("damage", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_a_damaged_entry_is_never_used(tmp_path, capsys, subset, cache, conversions, damage) -> None:
    first = evaluate_json(capsys, subset["scores"], subset)
    [key] = cache_entries_of(cache)
    CORRUPTIONS[damage](cache / key)
    assert sc._problem(str(cache / key), key) is not None
    sc._DIGESTS.clear()
    sc._VALIDATED.clear()
    assert evaluate_json(capsys, subset["scores"], subset) == first
    assert len(conversions) == 2
    assert sc._problem(str(cache / key), key) is None
    assert cache_entries_of(cache) == [key]
    assert not [n for n in cache_entries(cache) if n.startswith((".tmp-", ".trash-"))]


def test_a_killed_conversion_leaves_nothing_used(tmp_path, subset, cache, conversions) -> None:
    key = sc.source_key(sc.score_source(subset["scores"]))
    # what a conversion killed before its rename leaves: a temporary folder with shards
    tmp = cache / f".tmp-{key}-dead"
    import_tsv_folder(subset["scores"], str(tmp))
    path = sc.resolve_scores(subset["scores"])
    assert path == str(cache / key) and not tmp.exists()
    assert conversions == [subset["scores"]]
    assert ScoreSet.open(path).shards[0].path.startswith(path)


def test_concurrent_runs_convert_once(tmp_path, subset, cache) -> None:
    """Three processes ask for the same folder at the same moment; one converts, all agree."""
    script = tmp_path / "child.py"
    script.write_text(
        "import sys, time\n"
        "import envs.scorecache as sc\n"
        "real = sc.import_source\n"
        "def slow(*a, **k):\n"
        "    print('converting', flush=True)\n"
        "    time.sleep(1.0)\n"
        "    return real(*a, **k)\n"
        "sc.import_source = slow\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "print('path', sc.resolve_scores(sys.argv[1]), flush=True)\n"
    )
    env = {**os.environ, sc.CACHE_ENV: str(cache.parent), "PYTHONPATH": str(ROOT)}
    start = f"{time.time() + 4.0}"
    procs = [
        subprocess.Popen([sys.executable, str(script), subset["scores"], start], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    lines = [line for out, _ in outs for line in out.splitlines()]
    assert lines.count("converting") == 1, lines
    paths = {line.split(" ", 1)[1] for line in lines if line.startswith("path ")}
    [key] = cache_entries_of(cache)
    assert paths == {str(cache / key)}
    assert sc._problem(str(cache / key), key) is None
    assert not [n for n in cache_entries(cache) if n.startswith((".tmp-", ".trash-"))]


def test_without_a_lock_the_first_complete_entry_wins(subset, cache, conversions, monkeypatch) -> None:
    """Where no lock works (no fcntl), racing conversions still publish one whole entry."""
    monkeypatch.setattr(sc, "fcntl", None)
    real = sc.import_source

    def slow(*a: Any, **k: Any) -> Any:
        time.sleep(0.3)
        return real(*a, **k)

    monkeypatch.setattr(sc, "import_source", slow)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(sc.resolve_scores(subset["scores"])))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [key] = cache_entries_of(cache)
    assert results == [str(cache / key)] * 3
    assert sc._problem(str(cache / key), key) is None
    assert not [n for n in cache_entries(cache) if n.startswith((".tmp-", ".trash-"))]


def test_the_key_follows_content_not_mtimes(tmp_path, subset) -> None:
    src = sc.score_source(subset["scores"])
    key = sc.source_key(src)
    copy = tmp_path / "copy"
    shutil.copytree(subset["scores"], copy)  # new mtimes, inodes and path
    assert sc.source_key(sc.score_source(str(copy))) == key
    victim = sorted(copy.iterdir())[0]
    st = victim.stat()
    text = victim.read_text()
    changed = text.replace("\t0.", "\t1.", 1)  # a score, same length
    assert len(changed) == len(text) and changed != text
    victim.write_text(changed)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    assert sc.source_key(sc.score_source(str(copy))) != key
    assert sc.source_key(src) == key


def test_cache_location(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(sc.CACHE_ENV, str(tmp_path / "mine"))
    assert sc.cache_root() == str(tmp_path / "mine" / "scores")
    monkeypatch.delenv(sc.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sc.cache_root() == str(tmp_path / "xdg" / "sedtune" / "scores")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sc.cache_root() == str(tmp_path / "home" / ".cache" / "sedtune" / "scores")


def test_an_unwritable_cache_is_one_line(tmp_path, capsys, subset, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(sc.CACHE_ENV, str(blocker))
    assert main(["evaluate", "--scores", subset["scores"], "--ground-truth", subset["ground_truth"]]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot create the score cache" in err and sc.CACHE_ENV in err and "\n" not in err
