"""Honest interruption: SIGINT and SIGTERM stop a run, and nothing partial passes for finished.

Inside :func:`interruptible` (``sedtune tune``/``demo``/``synth`` and the Ray job process), the
first SIGINT or SIGTERM raises :class:`Interrupted` in the main thread, wherever it is: in
validation, in ``ray.init``, in a strategy waiting on Ray tasks, in a Ray Tune loop, while
writing. It is a :class:`KeyboardInterrupt`, so no ``except Exception`` swallows it, and every
``finally`` on the way runs (Ray is shut down, staging folders are removed). The signal is also
recorded: :func:`check` raises again where a run would otherwise go on (after each strategy,
before results are published), so even an interrupt swallowed by a library stops the run.

Ray and Ray Tune install handlers of their own, which would turn a signal into a *normal*
return with partial results (Tune's SIGINT handler ends the experiment "gracefully" and
``Tuner.fit`` returns the trials done so far) or into ``sys.exit`` (``ray.init`` sets a SIGTERM
handler). So: Tune's SIGINT handler is switched off (``$TUNE_DISABLE_SIGINT_HANDLER=1`` while
inside), and :func:`reinstall` puts this module's handlers back after ``ray.init``.

A signal can arrive while Python runs code whose exceptions it cannot propagate (a finalizer,
a weakref callback, the at-fork hooks that run while Ray starts its processes): Python then
reports the exception as "ignored", with a traceback on stderr. Inside :func:`interruptible`
``sys.unraisablehook`` drops an :class:`Interrupted` reported that way (the signal is already
recorded, and the next :func:`check` raises it); any other unraisable exception is reported
as before.

Further signals while stopping are ignored (stopping takes a few seconds: Ray shuts down);
SIGKILL ends the process at once. Inside :func:`deferred` (publishing results: a few renames)
a signal is only recorded; the caller's next :func:`check` raises it.

Exit codes: 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

LOG = logging.getLogger(__name__)

#: The signals that interrupt a run.
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Ray Tune's switch for its own SIGINT handler (read when ``Tuner.fit`` starts).
TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal.

    Args:
        signum: The signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        note: What the run leaves, for the user's one line (default: nothing written).
    """

    def __init__(self, signum: int, note: str = "") -> None:
        super().__init__(signum, note)
        self.signum = int(signum)
        self.note = note

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum

    @property
    def signame(self) -> str:
        """``SIGINT``, ``SIGTERM``, ..."""
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    def line(self) -> str:
        """One line for the user, e.g. ``interrupted (SIGINT); no results written``."""
        return f"interrupted ({self.signame}); {self.note or 'no results written'}"


@dataclass
class _State:
    depth: int = 0
    signum: int | None = None
    deferring: int = 0
    previous: dict[int, Any] = field(default_factory=dict)
    env: str | None = None
    unraisable: Any = None


_STATE = _State()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _STATE.signum is not None:
        LOG.warning("%s received while stopping: ignored", signal.Signals(signum).name)
        return
    _STATE.signum = signum
    if not _STATE.deferring:
        raise Interrupted(signum)


def _unraisable(args: Any) -> None:
    """``sys.unraisablehook`` inside a block: an :class:`Interrupted` Python could not raise is dropped.

    Args:
        args: ``sys.UnraisableHookArgs`` (exception, traceback, message, object).
    """
    if isinstance(args.exc_value, Interrupted):
        LOG.debug("%s arrived where Python cannot raise (%s); raised at the next check",
                  args.exc_value.signame, args.err_msg or "unraisable")
        return
    (_STATE.unraisable or sys.__unraisablehook__)(args)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def interruptible() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as :class:`Interrupted` inside the block (re-entrant).

    Outside the main thread (where Python cannot set handlers) it does nothing. The previous
    handlers and ``$TUNE_DISABLE_SIGINT_HANDLER`` are restored, and the signal received is
    forgotten, when the outermost block ends.
    """
    if not _main_thread():
        yield
        return
    if _STATE.depth == 0:
        _STATE.signum = None
        _STATE.deferring = 0
        _STATE.previous = {int(signum): signal.getsignal(signum) for signum in SIGNALS}
        _STATE.env = os.environ.get(TUNE_SIGINT_ENV)
        os.environ[TUNE_SIGINT_ENV] = "1"
        _STATE.unraisable = sys.unraisablehook
        sys.unraisablehook = _unraisable
        for signum in SIGNALS:
            signal.signal(signum, _handler)
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1
        if _STATE.depth == 0:
            _STATE.signum = None
            for number, h in _STATE.previous.items():
                signal.signal(number, h if h is not None else signal.SIG_DFL)
            sys.unraisablehook = _STATE.unraisable or sys.__unraisablehook__
            _STATE.unraisable = None
            if _STATE.env is None:
                os.environ.pop(TUNE_SIGINT_ENV, None)
            else:
                os.environ[TUNE_SIGINT_ENV] = _STATE.env


def active() -> bool:
    """Whether an :func:`interruptible` block is open."""
    return _STATE.depth > 0


def reinstall() -> None:
    """Put this module's handlers back (``ray.init`` replaces the SIGTERM handler).

    Raises:
        Interrupted: A signal came while another handler was in place and was recorded.
    """
    if not active() or not _main_thread():
        return
    for s in SIGNALS:
        if signal.getsignal(s) is not _handler:
            LOG.debug("restoring the %s handler", signal.Signals(s).name)
            signal.signal(s, _handler)
    check()


def received() -> int | None:
    """The signal received inside the current block, or None."""
    return _STATE.signum


def stop(signum: int, note: str = "") -> Interrupted:
    """Record ``signum`` as received (when another handler caught it) and return its exception.

    Args:
        signum: The signal.
        note: What the run leaves (see :class:`Interrupted`).
    """
    if _STATE.signum is None:
        _STATE.signum = signum
    return Interrupted(_STATE.signum, note)


def check(note: str = "") -> None:
    """Raise :class:`Interrupted` if a signal was received (a run must not go on).

    Args:
        note: What the run leaves (see :class:`Interrupted`).
    """
    if _STATE.signum is not None:
        raise Interrupted(_STATE.signum, note)


@contextmanager
def deferred() -> Iterator[None]:
    """Only record signals inside the block (a few renames that must not be cut); :func:`check` after."""
    _STATE.deferring += 1
    try:
        yield
    finally:
        _STATE.deferring -= 1
