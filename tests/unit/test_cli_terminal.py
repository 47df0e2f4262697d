"""The terminal side of the CLI: closed pipes end quietly, budgets read as people write them."""

from __future__ import annotations

import contextlib
import io
import os
import sys

from service.cli import main


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_closed_pipe_ends_quietly(shared_sets, monkeypatch):
    # `sedtune evaluate --json | head -1`: the reader is gone before the output is written.
    s = shared_sets["dcase2023-eval-sample"]
    r, w = os.pipe()
    os.close(r)
    pipe = os.fdopen(w, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", pipe)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["evaluate", "--scores", s.scores, "--ground-truth", s.ground_truth, "--json"])
    assert rc == 0
    assert err.getvalue() == ""


def test_budget_progress_reads_as_a_person_writes_it(monkeypatch):
    from service.commands import tune_commands

    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    update = tune_commands.TerminalReporter().progress("rl", 40.0)
    update(27.486666666666668)
    text = tty.getvalue()
    assert "27.5/40" in text
    assert "27.48666" not in text


def test_a_new_strategy_closes_the_previous_bar(monkeypatch):
    from service.commands import tune_commands

    monkeypatch.setattr(sys, "stderr", _Tty())
    reporter = tune_commands.TerminalReporter()
    exact = reporter.progress("exact", 40.0)
    exact(36.0)  # exact's grid can end below its budget
    first = reporter._open[0]
    reporter.progress("random", 40.0)
    assert len(reporter._open) == 1 and reporter._open[0] is not first
    assert first.disable  # tqdm disables a bar when it is closed: it is never drawn again
    reporter.stage("writing")  # the runs are over: no bar left open
    assert reporter._open == []


def test_an_interrupt_is_one_line_and_128_plus_the_signal(monkeypatch, capsys):
    import signal

    from service.commands import tune_commands
    from service.tuning.interrupt import Interrupted

    def stopped(args):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(tune_commands, "run_tune", stopped)
    assert main(["tune", "spec.yaml"]) == 143
    assert capsys.readouterr().err == "sedtune: interrupted (SIGTERM); no results written\n"

    def ctrl_c(args):
        raise KeyboardInterrupt  # Python's own SIGINT handler, outside the commands' handling

    monkeypatch.setattr(tune_commands, "run_tune", ctrl_c)
    assert main(["tune", "spec.yaml"]) == 130
    assert capsys.readouterr().err == "sedtune: interrupted (SIGINT)\n"


def test_tune_takes_force(monkeypatch):
    from service.cli import build_parser

    args = build_parser().parse_args(["tune", "spec.yaml", "--force"])
    assert args.force is True
    assert build_parser().parse_args(["tune", "spec.yaml"]).force is False
