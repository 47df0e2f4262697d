"""The terminal side of the CLI: only sedtune's own lines, a live line per strategy, the rest in a log.

The ``sedtune demo`` tests here run the real command in a real process, on a pseudo-terminal
or on pipes, with the pipeline replaced by a fake that writes to stdout and stderr the way Ray,
Tune, RLlib and Optuna do (a logger with a handler of its own, ``print``, a Python warning, C++
writing to descriptor 2, a child process): fast, and no Ray. The real demo on a terminal is
``tests/integration/test_terminal_pty.py``; the helpers for a pseudo-terminal (:func:`run_in_pty`,
:func:`screen`) are shared with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

from service.cli import main

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------- a pseudo-terminal


def run_in_pty(
    argv: list[str],
    cwd: str | Path,
    timeout: float = 120.0,
    columns: int = 120,
    env: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """Run ``argv`` with stdin, stdout and stderr on a new pseudo-terminal; its exit code and output.

    Reads until the process has exited and the terminal has nothing more to give (a process it
    started may still hold the terminal), within ``timeout`` seconds.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, start_new_session=True
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"still running after {timeout} s:\n{out.decode(errors='replace')}"
            ready, _, _ = select.select([master], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # EIO: every process closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        rc = proc.wait(timeout=30)
        os.close(master)
    return rc, bytes(out)


_ESCAPE = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def screen(data: bytes) -> list[str]:
    """The lines a terminal shows for ``data``: carriage returns overwrite, ``ESC[K`` erases,
    colours are invisible; any other escape sequence fails the test (it would need a real
    terminal to judge)."""
    text = data.decode("utf-8", "replace")
    rows: list[list[str]] = [[]]
    col = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = _ESCAPE.match(text, i)
            assert m is not None and m.group(2) in "Km", f"unexpected escape sequence {text[i:i + 12]!r}"
            if m.group(2) == "K":
                del rows[-1][col:]
            i = m.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            rows.append([])
            col = 0
        else:
            row = rows[-1]
            row.extend(" " * (col - len(row)))
            if col < len(row):
                row[col] = ch
            else:
                row.append(ch)
            col += 1
        i += 1
    lines = ["".join(r).rstrip() for r in rows]
    while lines and not lines[-1]:
        lines.pop()
    return lines


#: Lines sedtune writes for ``tune`` and ``demo`` (the comparison's own lines: COMPARISON).
STRATEGY_LINE = re.compile(
    r"^(manual|exact|random|bayes|rl) \(split \d+/\d+\) +\d+\.\d(/\d+(\.\d+)?)? evaluations"
    r"  best tuning F1 (\d\.\d{4}|-) +\d+:\d\d$"
)
SEDTUNE_LINES = [
    re.compile(r"^synth: +\d+%\|[█▏▎▍▌▋▊▉ ]*\| \d+/\d+ \[[^\]]*\]$"),  # the demo's data (tqdm)
    re.compile(r"^demo: \d+ generated clips x \d+ classes, strategies [a-z, ]+, budget [\d.]+ "
               r"evaluations each$"),
    re.compile(r"^log: /\S+/sedtune\.log$"),
    STRATEGY_LINE,
    re.compile(r"^results: /\S+ \(best parameters: \S+\)$"),
    re.compile(r"^tracked: experiment \S+, run \w+ at \S+ \(.*\)$"),
]
COMPARISON = [
    re.compile(r"^$"),
    re.compile(r"^# sedtune job `[^`]+`$"),
    re.compile(r"^## Per-class held-out F1 of \S+$"),
    re.compile(r"^\d+ split\(s\), selection `\w+`\. .+$"),
    re.compile(r"^\|.*\|$"),
]


def foreign_lines(lines: list[str]) -> list[str]:
    """The lines sedtune did not write."""
    return [ln for ln in lines if not any(p.match(ln) for p in SEDTUNE_LINES + COMPARISON)]


# ---------------------------------------------------------------------------- the demo on a fake pipeline

#: What Ray, Tune, RLlib and Optuna wrote during the demo (issue 13), one line per channel.
NOISE = {
    "logger": "WARNING authentication_token_setup.py:85 -- Token authentication is enabled.",
    "print": "INFO worker.py:2038 -- Started a local Ray instance.",
    "warning": "Install gputil for GPU system monitoring.",
    "fd2": "[core_worker.cc:2740 E] actor constructor arguments",
    "child": "INFO util.py -- Trainable.setup took 25.9 seconds.",
}

DRIVER = r'''
import logging, os, subprocess, sys, types, warnings

import service.tuning.outputs as outputs
import service.tuning.pipeline as pipeline
from service.cli import main
from service.strategies.base import StrategyResult, TrajectoryPoint

NOISE = {noise!r}


def fake_run_pipeline(spec, reporter, **kw):
    reporter.stage("validating")
    reporter.stage("running")
    ray = logging.getLogger("fake.ray")  # a library's logger, with its own handler on stderr
    ray.propagate = False
    ray.addHandler(logging.StreamHandler(sys.stderr))
    ray.warning(NOISE["logger"])
    print(NOISE["print"])
    warnings.warn(NOISE["warning"], UserWarning)
    os.write(2, (NOISE["fd2"] + "\n").encode())  # C++ (glog) writes to the descriptor itself
    child = "import sys; print(sys.argv[1], file=sys.stderr)"
    subprocess.run([sys.executable, "-c", child, NOISE["child"]], check=True)
    for name in ("exact", "rl"):
        update = reporter.progress(name + " (split 1/1)", 40.0)
        update(27.486666666666668)
        trajectory = [TrajectoryPoint(27.486666666666668, 0.51234, 1.0)]
        reporter.strategy_done(name, StrategyResult(name, {{}}, {{}}, trajectory, 27.486666666666668, 1.0))
    if os.environ.get("FAKE_RUN") == "fail":
        raise RuntimeError("the workers are gone")
    reporter.stage("writing")
    out = spec.with_absolute_paths().output_dir
    os.makedirs(out)
    result = types.SimpleNamespace(output_dir=out)
    return pipeline.PipelineRun(result, {{"best_params": os.path.join(out, "best_params.json")}}, None, "")


pipeline.run_pipeline = fake_run_pipeline
outputs.comparison_markdown = lambda result: "# sedtune job `demo`\n\n| strategy | selection |\n"
sys.exit(main(sys.argv[1:]))
'''


#: The fake's strategy lines as they end: one decimal, the budget as written, the best tuning F.
ENDED = [
    f"{name:<24}     27.5/40 evaluations  best tuning F1 0.5123  0:00"
    for name in ("exact (split 1/1)", "rl (split 1/1)")
]


def _driver(tmp_path: Path) -> list[str]:
    path = tmp_path / "driver.py"
    path.write_text(DRIVER.format(noise=NOISE))
    out = str(tmp_path / "demo")
    return [sys.executable, str(path), "demo", "--out", out, "--clips", "20", "--classes", "2"]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def test_the_terminal_shows_sedtunes_lines_only_and_the_log_the_rest(tmp_path):
    rc, out = run_in_pty(_driver(tmp_path), cwd=tmp_path, env=_env())
    lines = screen(out)
    assert rc == 0, lines
    assert foreign_lines(lines) == [], "\n".join(lines)
    log = tmp_path / "demo" / "results" / "sedtune.log"
    assert f"log: {log}" in lines
    assert [ln for ln in lines if STRATEGY_LINE.match(ln)] == ENDED
    assert lines[-1] == f"results: {tmp_path / 'demo' / 'results'} (best parameters: " \
        f"{tmp_path / 'demo' / 'results' / 'best_params.json'})"
    text = log.read_text()
    for line in NOISE.values():
        assert line in text, text
    assert "UserWarning" in text  # Python warnings are logged
    assert not list(tmp_path.glob("demo/.*")), "the log's temporary place is gone"


def test_verbose_shows_the_log_live(tmp_path):
    rc, out = run_in_pty([*_driver(tmp_path), "--verbose"], cwd=tmp_path, env=_env())
    lines = screen(out)
    assert rc == 0, lines
    shown = "\n".join(foreign_lines(lines))
    for line in NOISE.values():
        assert line in shown, lines
    assert len([ln for ln in lines if STRATEGY_LINE.match(ln)]) == 2  # the live lines still end in place
    assert (tmp_path / "demo" / "results" / "sedtune.log").is_file()


def test_on_pipes_a_plain_line_per_strategy_and_no_warnings(tmp_path):
    proc = subprocess.run(
        _driver(tmp_path), capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warnings, nothing of Ray's
    assert foreign_lines(proc.stdout.splitlines()) == []
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout  # no in-place drawing on a pipe
    lines = proc.stdout.splitlines()
    assert lines[:2] == [
        "demo: 20 generated clips x 2 classes, strategies manual, exact, random, bayes, rl, budget 40 "
        "evaluations each",
        f"log: {tmp_path / 'demo' / 'results' / 'sedtune.log'}",
    ]
    assert [ln for ln in lines if STRATEGY_LINE.match(ln)] == ENDED


def test_a_closed_pipe_ends_the_demo_quietly(tmp_path):
    r, w = os.pipe()
    os.close(r)  # `sedtune demo | head -0`: the reader is gone before the first line
    try:
        proc = subprocess.run(_driver(tmp_path), stdout=w, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=_env(), timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 0
    assert proc.stderr == ""


def test_a_failed_run_keeps_its_log_and_names_it(tmp_path):
    proc = subprocess.run(_driver(tmp_path), capture_output=True, text=True, cwd=tmp_path,
                          env=_env(FAKE_RUN="fail"), timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[-1] == "sedtune: failed: RuntimeError: the workers are gone (rerun with --debug for details)"
    assert len(lines) == 2 and lines[0].startswith("log: "), proc.stderr
    kept = Path(lines[0].removeprefix("log: "))
    try:
        assert kept.parent == Path(tempfile.gettempdir()) and kept.name.startswith("sedtune-results-failed-")
        text = kept.read_text()
    finally:
        kept.unlink()
    assert NOISE["fd2"] in text and "Traceback" in text and "the workers are gone" in text
    assert sorted(os.listdir(tmp_path / "demo")) == ["data"]  # nothing beside the output folder


# ---------------------------------------------------------------------------- the live line


def _pty_console():
    from service.commands.console import Console, Sink

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    return master, slave, Console(Sink(slave), Sink(slave))


def _drain(master: int) -> bytes:
    out = b""
    while select.select([master], [], [], 0)[0]:
        out += os.read(master, 1 << 16)
    return out


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_progress_reads_as_a_person_writes_it():
    from service.commands.live import LiveReporter

    master, slave, console = _pty_console()
    clock = _Clock()
    reporter = LiveReporter(console, clock=clock, tick_s=3600)
    try:
        update = reporter.progress("rl (split 1/1)", 40.0)
        update(27.486666666666668)
        clock.now += 65
        update(28.5)
        text = "\n".join(screen(_drain(master)))
    finally:
        reporter.close()
        os.close(slave)
        os.close(master)
    assert "28.5/40 evaluations" in text and "1:05" in text
    assert "27.48666" not in text and "40.0" not in text


def test_a_new_strategy_ends_the_previous_line_where_it_stopped():
    from service.commands.live import LiveReporter

    master, slave, console = _pty_console()
    reporter = LiveReporter(console, clock=_Clock(), tick_s=3600)
    try:
        exact = reporter.progress("exact (split 1/1)", 40.0)
        exact(36.0)  # exact's grid can end below its budget
        late = reporter.progress("random (split 1/1)", 40.0)
        exact(40.0)  # a stale callback draws nothing
        late(3.0)
        reporter.stage("writing")  # the runs are over: the last line stays, a note is shown
        lines = screen(_drain(master))
        reporter.close()
        after = screen(_drain(master))
    finally:
        os.close(slave)
        os.close(master)
    assert lines == [
        "exact (split 1/1)            36.0/40 evaluations  best tuning F1 -       0:00",
        "random (split 1/1)            3.0/40 evaluations  best tuning F1 -       0:00",
        "writing the results ...",
    ]
    assert after == []  # closing removes the note and leaves nothing


def test_strategies_may_report_their_best_f_as_they_go():
    from service.commands.console import Console, Sink
    from service.commands.live import LiveReporter
    from service.strategies.base import RunContext

    out = io.StringIO()
    reporter = LiveReporter(Console(Sink(out), Sink(out)), clock=_Clock())
    line = reporter.progress("bayes (split 1/1)", 40.0)
    ctx = RunContext("work", line)
    ctx.report(3.0, 0.4)
    ctx.report(4.0, float("nan"))  # a failed evaluation
    ctx.report(5.0, 0.3)  # never below the best so far
    assert (line.done, line.best_f) == (5.0, 0.4)
    spent: list[float] = []
    RunContext("work", spent.append).report(2.0, 0.5)  # a plain callback gets the evaluations
    assert spent == [2.0]
    reporter.close()
    # Not a terminal: the line is written once, when it ends.
    label = "bayes (split 1/1)"
    assert out.getvalue() == f"{label:<24}      5.0/40 evaluations  best tuning F1 0.4000  0:00\n"


# ---------------------------------------------------------------------------- other commands


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


def test_verbose_goes_before_or_after_the_command():
    from service.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["demo", "--verbose"]).verbose is True
    assert parser.parse_args(["-v", "demo"]).verbose is True
    assert parser.parse_args(["tune", "spec.yaml"]).verbose is False
