"""sedtune's own output while the process's stdout and stderr go to a log file.

While ``tune`` or ``demo`` runs, file descriptors 1 and 2 of the process point at the run's
log (:mod:`service.commands.runlog`): whatever Ray, Tune, RLlib, Optuna, MLflow or C++ code
writes there never reaches the terminal. sedtune writes its own lines through a
:class:`Console`, to copies of the terminal's descriptors made before the redirect (or to
Python's ``sys.stdout``/``sys.stderr`` objects themselves when a caller replaced them: they
do not write to the descriptors).

Three kinds of line:

- ``out``: the results (stdout); ``err``: messages (stderr);
- ``info``: what the run is doing (the log's path, a line per strategy when not on a
  terminal): stdout, or stderr when stdout carries JSON (``info_to_err``);
- the *status line*, on stderr and only when stderr is a terminal: the live line of the
  strategy running, redrawn in place (``\\r`` and erase-to-end-of-line); other lines written
  meanwhile are put above it. Not on a terminal, :meth:`Console.end_status` writes the final
  line as an ``info`` line instead.

Descriptors are written with ``os.write`` (nothing buffered): a closed pipe raises
:class:`BrokenPipeError` at the write, which :func:`service.cli.main` turns into a quiet exit,
and nothing is left to flush, and fail again, when the process exits.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import TextIO

#: Erase from the cursor to the end of the line (ANSI/VT100).
ERASE_LINE = "\x1b[K"


class Sink:
    """Where a console's lines go: a file descriptor, or a Python text stream.

    Args:
        target: The descriptor (closed by :meth:`close` when ``owned``) or the stream.
        encoding: For a descriptor: the text encoding.
        owned: For a descriptor: close it in :meth:`close`.
    """

    def __init__(self, target: int | TextIO, encoding: str = "utf-8", owned: bool = False) -> None:
        self.target = target
        self.encoding = encoding
        self.owned = owned

    def write(self, text: str) -> None:
        """Write ``text`` now (a stream is flushed)."""
        if isinstance(self.target, int):
            view = memoryview(text.encode(self.encoding, "replace"))
            while view:
                view = view[os.write(self.target, view) :]
        else:
            self.target.write(text)
            self.target.flush()

    def write_bytes(self, data: bytes) -> None:
        """Write raw bytes (decoded for a stream)."""
        if isinstance(self.target, int):
            view = memoryview(data)
            while view:
                view = view[os.write(self.target, view) :]
        else:
            self.write(data.decode(self.encoding, "replace"))

    def isatty(self) -> bool:
        """Whether it is a terminal."""
        try:
            return os.isatty(self.target) if isinstance(self.target, int) else bool(self.target.isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def columns(self) -> int:
        """The terminal's width (0: unknown)."""
        try:
            fd = self.target if isinstance(self.target, int) else self.target.fileno()
            return os.get_terminal_size(fd).columns
        except (OSError, ValueError, AttributeError):
            return 0

    def same_as(self, other: Sink) -> bool:
        """Whether both write to the same place."""
        return self.target is other.target or self.target == other.target

    def close(self) -> None:
        """Close an owned descriptor."""
        if self.owned and isinstance(self.target, int):
            with contextlib.suppress(OSError):
                os.close(self.target)


class Console:
    """sedtune's lines, with one status line redrawn in place on a terminal.

    Args:
        out: stdout's sink.
        err: stderr's sink.
        info_to_err: ``info`` lines go to stderr (stdout carries JSON).
    """

    def __init__(self, out: Sink, err: Sink, info_to_err: bool = False) -> None:
        self._out, self._err = out, err
        self._info = err if info_to_err else out
        self._lock = threading.RLock()
        self._status = ""
        self._closed = False
        self.is_tty = err.isatty()
        #: Called before a line is written, outside the console's lock (``--verbose``: show
        #: the log up to now first, so that the order on the screen stays true).
        self.before_line: Callable[[], None] | None = None

    # ------------------------------------------------------------------ lines

    def out(self, text: str) -> None:
        """Write ``text`` and a newline to stdout (above the status line, if any)."""
        self._line(self._out, text)

    def err(self, text: str) -> None:
        """Write ``text`` and a newline to stderr (above the status line, if any)."""
        self._line(self._err, text)

    def info(self, text: str) -> None:
        """Write ``text`` and a newline where ``info`` lines go (module docstring)."""
        self._line(self._info, text)

    def passthrough(self, data: bytes) -> None:
        """Write raw bytes to stderr above the status line (``--verbose``: the log as it grows)."""
        with self._lock:
            if self._closed or not data:
                return
            self._clear_status()
            self._err.write_bytes(data)
            self._draw_status()

    def _line(self, sink: Sink, text: str) -> None:
        if self.before_line is not None:
            self.before_line()
        with self._lock:
            if self._closed:
                return
            self._clear_status()
            sink.write(text + "\n")
            self._draw_status()

    # ------------------------------------------------------------------ the status line

    def status(self, text: str) -> None:
        """Show ``text`` as the status line, replacing the one before (terminals only)."""
        with self._lock:
            if self._closed or not self.is_tty:
                return
            self._status = text
            self._draw_status()

    def clear_status(self) -> None:
        """Remove the status line (nothing stays in its place)."""
        with self._lock:
            if self._closed:
                return
            self._clear_status()
            self._status = ""

    def end_status(self, text: str) -> None:
        """Turn the status line into the permanent line ``text`` (an ``info`` line when not a terminal)."""
        if not self.is_tty:
            self.info(text)
            return
        if self.before_line is not None:
            self.before_line()
        with self._lock:
            if self._closed:
                return
            self._err.write("\r" + self._fit(text) + ERASE_LINE + "\n")
            self._status = ""

    def _clear_status(self) -> None:
        if self._status and self.is_tty:
            self._err.write("\r" + ERASE_LINE)

    def _draw_status(self) -> None:
        if self._status and self.is_tty:
            self._err.write("\r" + self._fit(self._status) + ERASE_LINE)

    def _fit(self, text: str) -> str:
        """``text`` cut to the terminal's width (a wrapped line could not be redrawn in place)."""
        columns = self._err.columns()
        return text[: columns - 1] if columns > 1 else text

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        """End the status line where it is and close owned descriptors; idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._status and self.is_tty:
                    with contextlib.suppress(OSError):
                        self._err.write("\n")  # keep the last status where it is
            finally:
                self._status = ""
                self._closed = True
                self._out.close()
                if not self._err.same_as(self._out):
                    self._err.close()
