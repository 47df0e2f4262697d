"""Shared fixtures: the real DCASE sets in ../shared/data, imported once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The suite runs on two processes (pytest-xdist, one test module per process: README). Ray
# starts its workers at nice 15, so a Ray test beside a busy test of the other process at
# nice 0 got a few percent of a core: exact stalled for minutes (measured: test_interrupt
# under two busy loops). Every Ray instance the tests start (in process, `ray start`, the
# commands they run) inherits this and runs its workers at the tests' own priority.
os.environ.setdefault("RAY_worker_niceness", "0")

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A private PostgreSQL server for the session (tests/pg_support.py).

    Skipped where PostgreSQL is not installed, unless $SEDTUNE_REQUIRE_POSTGRES is set (CI
    sets it: there a missing server is a failure).
    """
    from tests.pg_support import REQUIRE_ENV, pg_bin, pg_server

    if pg_bin() is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"PostgreSQL is not installed but ${REQUIRE_ENV} is set")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    with pg_server() as server:
        yield server
