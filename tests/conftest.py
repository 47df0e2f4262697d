"""Shared fixtures: the real DCASE sets in ../shared/data, imported once per session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEDTUNE_SHARED_DATA", ROOT.parent / "shared" / "data"))

# name -> (scores folder, ground-truth folder)
SETS = {
    "dcase2020-baseline": ("desed-validation/dcase2020-baseline", "desed-validation"),
    "dcase2021-baseline-student": (
        "desed-validation/dcase2021-baseline-student",
        "desed-validation",
    ),
    "dcase2021-baseline-teacher": (
        "desed-validation/dcase2021-baseline-teacher",
        "desed-validation",
    ),
    "dcase2023-eval-sample": ("dcase2023-eval-sample/baseline2-run1", "dcase2023-eval-sample"),
}


@dataclass(frozen=True)
class SharedSet:
    """An imported shared set: score-set directory, ground truth and durations paths."""

    name: str
    scores: str
    ground_truth: str
    durations: str


@pytest.fixture(scope="session")
def shared_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SharedSet]:
    """Every shared set imported into a score set (once per test session)."""
    from envs.importers import import_tsv_folder

    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}")
    root = tmp_path_factory.mktemp("shared_sets")
    out = {}
    for name, (scores, gt) in SETS.items():
        dst = root / name
        import_tsv_folder(str(SHARED_DATA / scores / "scores"), str(dst))
        out[name] = SharedSet(
            name,
            str(dst),
            str(SHARED_DATA / gt / "ground_truth.tsv"),
            str(SHARED_DATA / gt / "durations.tsv"),
        )
    return out
