"""`sedtune demo` on a terminal (issue 13): the screen holds sedtune's own lines only.

The demo runs on a pseudo-terminal, at a small size that still trains the rl strategy, and
the test reads the screen as a terminal shows it (:func:`tests.unit.test_cli_terminal.screen`):
every line must be one sedtune writes (the demo header, the log's path, a line per strategy,
the comparison, the results and tracking lines). What Ray, Tune, RLlib, Optuna and MLflow
write goes to ``<out>/results/sedtune.log``; ``--verbose`` shows it on the terminal too.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.unit.test_cli_terminal import STRATEGY_LINE, foreign_lines, run_in_pty, screen

pytestmark = pytest.mark.ray

#: The lines issue 13 measured between the progress bars (any of them on the screen fails).
MEASURED = [
    "Token authentication is enabled",
    "Started a local Ray instance",
    "Wrote the latest version of all result files",
    "A new study created in memory",
    "You are running PPO on the new API stack",
    "core_worker",
    "RLModule(config=",
    "Trainable.setup took",
    "Install gputil for GPU system monitoring",
    "MLflow database tables",
    "Warning",
]
#: Of those, what every demo writes (the rest depends on sizes and speed): found in the log.
EVERY_RUN = ["Started a local Ray instance", "Wrote the latest version of all result files",
             "A new study created in memory"]


def _demo(tmp_path: Path, *extra: str) -> tuple[int, bytes, Path]:
    out = tmp_path / "demo"
    rc, data = run_in_pty(
        [sys.executable, "-m", "service.cli", "demo", "--out", str(out), *extra], cwd=tmp_path, timeout=600
    )
    return rc, data, out


def test_the_demo_on_a_terminal_shows_only_sedtunes_lines(tmp_path: Path) -> None:
    rc, data, out = _demo(tmp_path, "--clips", "120", "--classes", "3", "--budget", "20")
    lines = screen(data)
    text = "\n".join(lines)
    assert rc == 0, text
    assert foreign_lines(lines) == [], text
    # Nothing hidden either: the only control sequence is the live line's erase (no colours,
    # not even the colour reset Ray's colorama writes at exit).
    assert set(re.findall(rb"\x1b\[[0-9;?]*[A-Za-z]", data)) <= {b"\x1b[K"}
    for measured in MEASURED:
        assert measured not in text
    log = out / "results" / "sedtune.log"
    assert f"log: {log}" in lines
    # A line per strategy, where it ended, with its best tuning F1.
    ended = [ln for ln in lines if STRATEGY_LINE.match(ln)]
    assert [ln.split(" ")[0] for ln in ended] == ["manual", "exact", "random", "bayes", "rl"], text
    assert all("best tuning F1 -" not in ln for ln in ended), text
    assert "20.0/20 evaluations" in ended[2]  # random: every trial, the budget as written
    logged = log.read_text()
    for line in EVERY_RUN:
        assert line in logged
    assert not list(out.glob(".*sedtune-log*")) and not (out / "results.sedtune-failed.log").exists()


def test_verbose_shows_rays_lines_as_they_come(tmp_path: Path) -> None:
    rc, data, out = _demo(tmp_path, "--clips", "60", "--classes", "3", "--budget", "8", "--verbose")
    lines = screen(data)
    text = "\n".join(lines)
    assert rc == 0, text
    for line in EVERY_RUN:
        assert line in text
    assert len([ln for ln in lines if STRATEGY_LINE.match(ln)]) == 5, text
    assert (out / "results" / "sedtune.log").is_file()
