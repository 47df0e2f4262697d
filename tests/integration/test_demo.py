"""`sedtune demo` end to end (the README's main command), at a reduced size: it generates a
set, runs every strategy on a local Ray, prints the comparison and writes the outputs; on
pipes it prints sedtune's own lines only (the rest goes to the run's log)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from envs.params import load_params
from tests.unit.test_cli_terminal import STRATEGY_LINE, foreign_lines

pytestmark = pytest.mark.ray


def test_demo_runs_every_strategy_and_writes_a_usable_parameter_file(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "demo", "--out", str(out), "--clips", "120",
         "--classes", "3", "--budget", "20"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    rows = {line.split("|")[1].strip().split(" ")[0] for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| strategy") and not line.startswith("| class")}
    assert {"manual", "exact", "random", "bayes", "rl"} <= rows, proc.stdout
    cmp = json.loads((out / "results" / "comparison.json").read_text())
    keys = {f"{r['strategy']}/{r['selection']}" for r in cmp["rows"]}
    assert {"rl/naive", "rl/robust", "rl/untrained", "rl/adaptive", "rl/untrained_adaptive"} <= keys
    best = load_params(str(out / "results" / "best_params.json"))
    assert len(best.classes) == 3
    # Tracked to the embedded SQLite store beside the demo.
    assert (out / "mlflow.db").is_file() and "tracked:" in proc.stdout

    # Issue 13: only sedtune's lines, no Python warnings; Ray's, Tune's, RLlib's and Optuna's
    # lines go to the log in the results. Not a terminal: a plain line per strategy as it ends.
    assert proc.stderr == "", proc.stderr
    assert foreign_lines(proc.stdout.splitlines()) == [], proc.stdout
    ended = [ln for ln in proc.stdout.splitlines() if STRATEGY_LINE.match(ln)]
    assert [ln.split(" ")[0] for ln in ended] == ["manual", "exact", "random", "bayes", "rl"], proc.stdout
    log = out / "results" / "sedtune.log"
    assert proc.stdout.splitlines()[1] == f"log: {log}"
    assert "Started a local Ray instance" in log.read_text()
