"""The log file of a ``tune`` or ``demo`` run: everything that is not sedtune's own line.

Ray, Tune, RLlib, Optuna and MLflow write to the process's stdout and stderr from Python
(loggers with handlers of their own, warnings, ``print``) and from C++ (the core worker's
glog lines); Python's logging configuration alone cannot keep them off the terminal. So while
a run lasts, file descriptors 1 and 2 of the process point at the log file (``os.dup2``), and
sedtune writes its own lines to copies of the terminal's descriptors made before
(:class:`~service.commands.console.Console`). Python warnings are logged
(``logging.captureWarnings``), and sedtune's own loggers write at INFO level at least: the log
says what the run did.

Where: ``<output>/sedtune.log``, the path printed when the run starts. The output folder
appears only when the run completes (:mod:`service.tuning.staging`), so while the run lasts
the log is written beside it, ``<parent>/.<name>.sedtune-log-XXXXXXXX.log``, and
:meth:`RunLog.publish` moves it in when the results are published (the open descriptors follow
the file). A run that fails keeps its log in the temporary folder
(``$TMPDIR/sedtune-<name>-failed-XXXXXXXX.log``) and prints its path on stderr before the
error: nothing is left beside the output folder. An interrupted or refused run (bad input)
removes its log: it ends with its one line.

``--verbose``: the log is also shown on stderr as it grows (a thread follows the file).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
from types import TracebackType
from typing import TextIO

from envs.errors import SedtuneInputError
from service.commands.console import Console, Sink

#: The log's name in the output folder.
LOG_NAME = "sedtune.log"
#: Seconds between looks at the log for ``--verbose``.
FOLLOW_S = 0.1
#: Loggers that write at INFO level into the log.
OWN_LOGGERS = ("service", "envs")


class RunLog:
    """Send the process's stdout and stderr to the run's log while the ``with`` block lasts.

    ``with RunLog(output) as console:`` gives the :class:`Console` for sedtune's own lines.

    Args:
        output_dir: The job's output folder (the log ends up inside it).
        verbose: Also show the log on stderr as it grows.
        info_to_err: The console's ``info`` lines go to stderr (stdout carries JSON).
    """

    def __init__(self, output_dir: str, verbose: bool = False, info_to_err: bool = False) -> None:
        self.target = os.path.realpath(output_dir)
        self.path = os.path.join(self.target, LOG_NAME)
        self.verbose = verbose
        self.info_to_err = info_to_err
        self.published = False
        self._file: str | None = None  # where the log is now
        self._saved: tuple[int, int] | None = None
        self._console: Console | None = None
        self._follow: _Follow | None = None
        self._made: list[str] = []
        self._levels: dict[str, int] = {}
        self._colour_reset = False  # colorama's exit hook set before the run

    def __enter__(self) -> Console:
        parent, name = os.path.split(self.target)
        self._made = _missing_dirs(parent)
        try:
            os.makedirs(parent, exist_ok=True)
            fd, self._file = _fresh_file(parent, f".{name}.sedtune-log-", ".log")
        except OSError as e:
            raise SedtuneInputError(
                f"output {self.target}: cannot create a file in {parent} ({e.strerror or e})"
            ) from None
        self._colour_reset = _colour_reset_set()
        _flush_std()
        try:
            return self._redirect(fd)
        except BaseException as e:  # a signal on the way: put everything back
            self.__exit__(type(e), e, e.__traceback__)
            raise
        finally:
            os.close(fd)

    def _redirect(self, fd: int) -> Console:
        console = Console(_sink(sys.stdout, 1), _sink(sys.stderr, 2), self.info_to_err)
        self._console = console
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        logging.captureWarnings(True)
        for name in OWN_LOGGERS:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
        if self.verbose and self._file is not None:
            self._follow = _Follow(self._file, console)
            console.before_line = self._follow.catch_up
            self._follow.start()
        return console

    def publish(self) -> None:
        """Move the log into the output folder (call once the results are published there)."""
        if self._file is None or self.published:
            return
        try:
            os.replace(self._file, self.path)
        except OSError:
            logging.getLogger(__name__).warning("could not move the log to %s", self.path, exc_info=True)
            return
        self._file, self.published = self.path, True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            _note_end(exc)
            _flush_std()
            if self._follow is not None:
                self._follow.finish()
        finally:
            try:
                if self._saved is not None:
                    os.dup2(self._saved[0], 1)
                    os.dup2(self._saved[1], 2)
                    for fd in self._saved:
                        os.close(fd)
                    self._saved = None
            finally:
                if not self._colour_reset:
                    _drop_colour_reset()
                logging.captureWarnings(False)
                for name, level in self._levels.items():
                    logging.getLogger(name).setLevel(level)
                if self._console is not None:
                    self._console.close()
        if not self.published:
            self._unpublished(exc)

    def _unpublished(self, exc: BaseException | None) -> None:
        """A run that did not complete: keep a failed run's log in the temporary folder, else remove it."""
        path, self._file = self._file, None
        if path is None:
            return
        kept = None
        try:
            if _failure(exc) and os.path.getsize(path) > 0:
                name = os.path.basename(self.target)
                fd, kept = tempfile.mkstemp(prefix=f"sedtune-{name}-failed-", suffix=".log")
                os.close(fd)
                shutil.move(path, kept)
            else:
                os.unlink(path)
        except OSError:
            kept = None
        for d in reversed(self._made):  # the folders made for the log, if still empty
            with contextlib.suppress(OSError):
                os.rmdir(d)
        if kept is not None:
            print(f"log: {kept}", file=sys.stderr)


class _Follow(threading.Thread):
    """Copies what the log gains to the console, whole lines at a time (``--verbose``)."""

    def __init__(self, path: str, console: Console) -> None:
        super().__init__(name="sedtune-log-follow", daemon=True)
        self._reader = open(path, "rb")  # noqa: SIM115 (closed by finish)
        self._console = console
        self._done = threading.Event()
        self._pending = b""
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            while True:
                stopping = self._done.is_set()
                with self._lock:
                    self._pump()
                if stopping:
                    return
                self._done.wait(FOLLOW_S)
        except OSError:  # the terminal is gone: the main thread hears of it at its next line
            return

    def catch_up(self) -> None:
        """Show what the log holds now (before a line of sedtune's: the order stays true)."""
        _flush_std()
        with self._lock:
            self._pump()

    def _pump(self) -> None:
        while chunk := self._reader.read(1 << 16):
            self._pending += chunk
            cut = self._pending.rfind(b"\n") + 1
            if cut:
                self._console.passthrough(self._pending[:cut])
                self._pending = self._pending[cut:]

    def finish(self) -> None:
        """Show the rest of the log and stop (the writers have flushed)."""
        self._console.before_line = None
        self._done.set()
        self.join()
        try:
            if self._pending:
                self._console.passthrough(self._pending + b"\n")
        except OSError:
            pass
        finally:
            self._pending = b""
            self._reader.close()


def _failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` ends a run as a failure (not a refusal, a signal or a closed pipe)."""
    return isinstance(exc, Exception) and not isinstance(exc, (SedtuneInputError, BrokenPipeError))


def _note_end(exc: BaseException | None) -> None:
    """Log a failure with its traceback (the user gets one line; the log the whole story)."""
    if _failure(exc):
        logging.getLogger(__name__).error("the run failed", exc_info=exc)


def _sink(stream: TextIO | None, fd: int) -> Sink:
    """sedtune's lines for ``stream``: a copy of ``fd`` when the stream writes to it (the usual
    case), else the stream itself (replaced by a caller, e.g. ``contextlib.redirect_stdout``:
    the redirect does not touch it)."""
    if stream is not None:
        try:
            writes_fd = stream.fileno() == fd
        except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation: no descriptor
            writes_fd = False
        if not writes_fd:
            return Sink(stream)
    return Sink(os.dup(fd), getattr(stream, "encoding", None) or "utf-8", owned=True)


def _colour_reset_set() -> bool:
    """Whether colorama's exit hook is set (``colorama.init`` was called)."""
    return bool(getattr(sys.modules.get("colorama.initialise"), "atexit_done", False))


def _drop_colour_reset() -> None:
    """Forget colorama's exit hook, set during the run (Ray's CLI logger calls ``colorama.init``).

    At exit the hook writes a colour reset (``ESC[0m``) to stdout, the terminal by then, after
    sedtune's last line; every coloured line it would reset went to the log.
    """
    initialise = sys.modules.get("colorama.initialise")
    reset = getattr(initialise, "reset_all", None)
    if reset is not None and _colour_reset_set():
        atexit.unregister(reset)


def _flush_std() -> None:
    """Flush Python's stdout and stderr (what they hold belongs where the descriptors point now)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


def _fresh_file(parent: str, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file ``parent/<prefix><8 hex digits><suffix>``, open for appending (default mode)."""
    while True:
        path = os.path.join(parent, prefix + secrets.token_hex(4) + suffix)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666), path
        except FileExistsError:
            continue


def _missing_dirs(path: str) -> list[str]:
    """The folders ``os.makedirs(path)`` would create, outermost first."""
    missing: list[str] = []
    while path and not os.path.exists(path):
        missing.insert(0, path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing
