"""Shared by the score-format and score-cache tests: subsets of ../shared/data, a private cache.

Fixtures (import them by their function name, ``# noqa: F401``): ``cache`` (autouse: a
private ``$SEDTUNE_CACHE_DIR`` per test, nothing remembered between tests; the cache's
``scores`` folder), ``conversions`` (the sources converted during the test) and ``subset``
(30 clips of a shared set in ``tmp_path``, every class present).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import envs.scorecache as sc
from service.cli import main
from tests.conftest import SHARED_DATA

DESED = SHARED_DATA / "desed-validation"
STUDENT = DESED / "dcase2021-baseline-student" / "scores"
SAMPLE = SHARED_DATA / "dcase2023-eval-sample"


@pytest.fixture(name="cache", autouse=True)
def cache_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache folder per test, and no digest or validation remembered from another."""
    root = tmp_path / "cache"
    monkeypatch.setenv(sc.CACHE_ENV, str(root))
    sc._DIGESTS.clear()
    sc._VALIDATED.clear()
    return root / "scores"


@pytest.fixture(name="conversions")
def conversions_fixture(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sources converted (into the cache) while the test runs."""
    seen: list[str] = []
    real = sc.import_source

    def counting(source: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(sc, "import_source", counting)
    return seen


def _read_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def make_subset(
    dst: Path, clips: int, skip: int = 0, scores: Path = STUDENT, data: Path = DESED
) -> dict[str, str]:
    """Copy some clips of a shared set (TSV scores, ground truth, durations) into ``dst``.

    Clips are taken in ground-truth order, first greedily so that every class has an event
    (the alignment requires it), then in order up to ``clips``; ``skip`` clips are left out
    first (for disjoint subsets).
    """
    gt = _read_rows(data / "ground_truth.tsv")
    header, rows = gt[0], gt[1:]
    by_clip: dict[str, list[list[str]]] = {}
    for r in rows:
        by_clip.setdefault(r[0], []).append(r)
    names = list(by_clip)[skip:]
    chosen: list[str] = []
    covered: set[str] = set()
    for n in names:
        labels = {r[3] for r in by_clip[n] if len(r) > 3 and r[3]}
        if labels - covered:
            chosen.append(n)
            covered |= labels
    chosen += [n for n in names if n not in chosen][: max(0, clips - len(chosen))]
    (dst / "scores").mkdir(parents=True)
    for n in chosen:
        shutil.copy(scores / (n[: -len(".wav")] + ".tsv"), dst / "scores")
    with open(dst / "ground_truth.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for n in chosen:
            for r in by_clip[n]:
                f.write("\t".join(r) + "\n")
    dur = _read_rows(data / "durations.tsv")
    keep = set(chosen)
    with open(dst / "durations.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(dur[0]) + "\n")
        for r in dur[1:]:
            if r[0] in keep:
                f.write("\t".join(r) + "\n")
    return {"scores": str(dst / "scores"), "ground_truth": str(dst / "ground_truth.tsv"),
            "durations": str(dst / "durations.tsv")}


@pytest.fixture(name="subset")
def subset_fixture(tmp_path: Path) -> dict[str, str]:
    """30 clips of the DCASE 2021 student baseline on DESED validation, every class present."""
    return make_subset(tmp_path / "subset", 30)


def imported(tmp_path: Path, scores: str, name: str = "imported") -> str:
    """The explicit ``sedtune import`` of a TSV folder or .npz (its output not captured)."""
    out = str(tmp_path / name)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["import", scores, out]) == 0
    return out


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def evaluate_json(capsys: pytest.CaptureFixture[str], scores: str, data: dict[str, str], *extra: str) -> Any:
    argv = ["evaluate", "--scores", scores, "--ground-truth", data["ground_truth"],
            "--durations", data["durations"], "--json", *extra]
    return json.loads(run_cli(capsys, argv))


def cache_entries(cache: Path) -> list[str]:
    return sorted(os.listdir(cache)) if cache.is_dir() else []


def cache_entries_of(cache: Path) -> list[str]:
    """Entry folders (not locks, not temporary folders)."""
    return [n for n in cache_entries(cache) if not n.startswith(".")]
