"""The live display of ``sedtune tune`` and ``sedtune demo``: one line per strategy run.

:class:`LiveReporter` is the CLI's :class:`~service.tuning.pipeline.Reporter`. Strategies run
one after another, so one line is live at a time:

    exact (split 1/1)        14.0/20 evaluations  best tuning F1 0.3082  0:01

- evaluations spent of the budget, with one decimal (an RL episode over part of the clips
  counts a fraction of an evaluation; the budget is written as given: ``28.5/40``);
- the best tuning macro F1 so far: live when the strategy reports it
  (:meth:`service.strategies.base.RunContext.report`), and from the strategy's result when it
  ends (every strategy records its trajectory); ``-`` until known;
- the time since the strategy started.

On a terminal (stderr) the line is redrawn in place at every report and every second, and
stays when the strategy ends. Elsewhere (a pipe, CI) nothing is drawn while a strategy runs
and one plain line is written when it ends, on stdout (stderr with ``--json``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.commands.console import Console

if TYPE_CHECKING:
    from service.results.tracking import TrackingReport
    from service.strategies.base import StrategyResult
    from service.tuning.runner import JobResult

#: Seconds between redraws of the live line (for the elapsed time).
TICK_S = 1.0
#: What the status line says after the strategies (until the next line).
STAGE_NOTES = {"writing": "writing the results ...", "tracking": "logging the run to MLflow ..."}


def budget_text(value: float) -> str:
    """A budget as a person writes it: ``40``, ``28.5``, ``0.25`` (no ``40.0``, no ``4e+01``)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def clock_text(seconds: float) -> str:
    """Elapsed time as ``m:ss`` (``h:mm:ss`` from an hour on)."""
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class StrategyLine:
    """One strategy run's progress: the callback a strategy gets as ``RunContext.progress``.

    Call it with the evaluations spent so far; :meth:`best` takes the best tuning macro F so
    far (what :meth:`service.strategies.base.RunContext.report` looks for).
    """

    def __init__(self, reporter: LiveReporter, label: str, total: float | None, started: float) -> None:
        self._reporter: LiveReporter | None = reporter
        self.label = label
        self.total = total
        self.started = started
        self.done = 0.0
        self.best_f = math.nan
        self.ended: float | None = None

    def __call__(self, done: float) -> None:
        """The evaluations spent so far."""
        self.done = float(done)
        if self._reporter is not None:
            self._reporter.redraw(self)

    def best(self, f: float) -> None:
        """The best tuning macro F so far (ignored unless finite)."""
        if math.isfinite(f) and not (f <= self.best_f):
            self.best_f = float(f)
        if self._reporter is not None:
            self._reporter.redraw(self)

    def __getstate__(self) -> dict[str, Any]:
        """A copy without the display: Tune pickles its callbacks, and a strategy's with them."""
        return {**self.__dict__, "_reporter": None}

    def text(self, now: float) -> str:
        """The line as shown at time ``now``."""
        evals = f"{self.done:.1f}" + ("" if self.total is None else f"/{budget_text(self.total)}")
        best = f"{self.best_f:.4f}" if math.isfinite(self.best_f) else "-"
        end = self.ended if self.ended is not None else now
        elapsed = clock_text(end - self.started)
        return f"{self.label:<24} {evals:>11} evaluations  best tuning F1 {best:<6}  {elapsed}"


class LiveReporter:
    """The pipeline's reporter for the terminal (module docstring).

    Args:
        console: Where the lines go.
        log_path: The run's log, named (an ``info`` line) when the run starts, after validation.
        clock: Seconds, monotonic (a test may pass its own).
        tick_s: Seconds between redraws on a terminal.
    """

    def __init__(
        self,
        console: Console,
        log_path: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = TICK_S,
    ) -> None:
        self.console = console
        self.log_path = log_path
        self._clock = clock
        self._tick_s = tick_s
        self._lock = threading.RLock()
        self._current: StrategyLine | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # ------------------------------------------------------------------ the Reporter protocol

    def stage(self, state: str) -> None:
        """Name the log when the runs start; end the last line when they are over, and say what
        the pipeline does then (terminals)."""
        if state != "running":
            self.close()
        elif self.log_path:
            self.console.info(f"log: {self.log_path}")
        note = STAGE_NOTES.get(state)
        if note:
            self.console.status(note)

    def progress(self, label: str, total: float | None) -> StrategyLine:
        """A new live line (ending the one before: a strategy may stop below its budget)."""
        with self._lock:
            self._end()
            line = StrategyLine(self, label, total, self._clock())
            self._current = line
            self.redraw(line)
        self._start_ticker()
        return line

    def strategy_done(self, name: str, result: StrategyResult) -> None:
        """End the live line with the strategy's own count and best tuning F."""
        with self._lock:
            line = self._current
            if line is None:
                return
            line.done = float(result.evaluations)
            finite = [p.best_f for p in result.trajectory if math.isfinite(p.best_f)]
            if finite:
                line.best_f = max([*finite, line.best_f] if math.isfinite(line.best_f) else finite)
            self._end()

    def written(self, result: JobResult, paths: dict[str, str]) -> None:
        """Nothing to show: the comparison is printed at the end."""

    def tracked(self, report: TrackingReport | None, line: str) -> None:
        """Nothing to show: the tracking line is printed at the end."""

    # ------------------------------------------------------------------ drawing

    def redraw(self, line: StrategyLine) -> None:
        """Draw ``line`` if it is the live one (terminals only)."""
        with self._lock:
            if line is self._current:
                self.console.status(line.text(self._clock()))

    def _end(self) -> None:
        """Make the live line permanent (or write its plain line when not a terminal)."""
        line, self._current = self._current, None
        if line is not None:
            line.ended = self._clock()
            self.console.end_status(line.text(line.ended))

    def _start_ticker(self) -> None:
        if not self.console.is_tty or (self._ticker is not None and self._ticker.is_alive()):
            return
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, name="sedtune-live-line", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self._tick_s):
            with self._lock:
                if self._current is None:
                    continue
                try:
                    self.redraw(self._current)
                except OSError:  # the terminal is gone: the main thread will hear of it
                    return

    def close(self) -> None:
        """End the live line, remove a stage note and stop redrawing; idempotent."""
        with self._lock:
            self._stop.set()
            try:
                self._end()
                self.console.clear_status()
            finally:
                ticker, self._ticker = self._ticker, None
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join()
