"""service.tuning.interrupt: SIGINT and SIGTERM become ``Interrupted``, recorded, never lost.

Real signals, sent to this process (``signal.raise_signal`` runs the handler at once).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import pytest

from service.tuning import interrupt
from service.tuning.interrupt import Interrupted


@pytest.mark.parametrize(
    ("signum", "code", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_signal_inside_raises_interrupted(signum, code, name) -> None:
    with pytest.raises(Interrupted) as caught, interrupt.interruptible():
        signal.raise_signal(signum)
        pytest.fail("the handler did not raise")
    assert caught.value.exit_code == code and caught.value.signame == name
    assert caught.value.line() == f"interrupted ({name}); no results written"
    assert isinstance(caught.value, KeyboardInterrupt)  # no `except Exception` swallows it


def test_handlers_and_tunes_switch_are_restored(monkeypatch) -> None:
    monkeypatch.setenv(interrupt.TUNE_SIGINT_ENV, "0")
    before = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
    with interrupt.interruptible():
        assert os.environ[interrupt.TUNE_SIGINT_ENV] == "1"  # Tune must not catch SIGINT itself
        with interrupt.interruptible():  # nested: one set of handlers
            pass
        assert interrupt.active()
    assert not interrupt.active()
    assert {s: signal.getsignal(s) for s in interrupt.SIGNALS} == before
    assert os.environ[interrupt.TUNE_SIGINT_ENV] == "0"


def test_a_swallowed_interrupt_is_raised_again_by_check() -> None:
    with interrupt.interruptible():
        with contextlib.suppress(Interrupted):  # a library that catches everything
            signal.raise_signal(signal.SIGINT)
        assert interrupt.received() == signal.SIGINT
        with pytest.raises(Interrupted, match="kept"):
            interrupt.check("kept")


def test_a_second_signal_while_stopping_is_ignored() -> None:
    with pytest.raises(Interrupted) as caught, interrupt.interruptible():
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:
            signal.raise_signal(signal.SIGINT)  # while cleaning up: no second exception
    assert caught.value.signum == signal.SIGTERM


def test_deferred_records_without_raising() -> None:
    with interrupt.interruptible():
        with interrupt.deferred():
            signal.raise_signal(signal.SIGTERM)
            done = True
        assert done
        with pytest.raises(Interrupted):
            interrupt.check()


def test_reinstall_takes_the_handlers_back(monkeypatch) -> None:
    """``ray.init`` sets a SIGTERM handler of its own (``sys.exit``): reinstall undoes it."""
    with interrupt.interruptible():
        signal.signal(signal.SIGTERM, lambda *_: None)
        interrupt.reinstall()
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGTERM)


def test_outside_a_block_nothing_changes() -> None:
    before = signal.getsignal(signal.SIGTERM)
    interrupt.reinstall()
    interrupt.check()
    assert signal.getsignal(signal.SIGTERM) is before


def test_rays_own_sigterm_exit_during_ray_init_is_an_interrupt(monkeypatch) -> None:
    """``ray.init`` installs a SIGTERM handler calling ``sys.exit``: a SIGTERM while it starts
    surfaces as SystemExit, which the runner turns into the interrupt it is."""
    ray = pytest.importorskip("ray")
    from service.tuning.runner import init_ray

    def init(**kwargs):
        raise SystemExit(signal.SIGTERM)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(Interrupted) as caught, interrupt.interruptible():
        init_ray(None, 1)
    assert caught.value.exit_code == 143
    with pytest.raises(SystemExit):  # outside a run: left alone
        init_ray(None, 1)


class _RaisesOnCollection:
    """Sends itself a signal from its finalizer, where Python cannot raise an exception."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        signal.raise_signal(self.signum)


def test_a_signal_where_python_cannot_raise_is_not_reported_and_is_raised_by_check(monkeypatch) -> None:
    # As when SIGINT arrives in logging's at-fork hook while ray.init starts its processes:
    # Python would print "Exception ignored in ..." with a traceback (the hook before ours).
    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: reported.append(args.exc_value))
    previous = sys.unraisablehook
    with interrupt.interruptible():
        obj = _RaisesOnCollection(signal.SIGINT)
        del obj  # the finalizer runs here; its Interrupted is "unraisable"
        assert interrupt.received() == signal.SIGINT
        with pytest.raises(Interrupted):
            interrupt.check()
    assert reported == []
    assert sys.unraisablehook is previous


def test_other_unraisable_exceptions_go_to_the_previous_hook(monkeypatch) -> None:
    class Broken:
        def __del__(self) -> None:
            raise ValueError("a real bug in a finalizer")

    seen: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: seen.append(args.exc_value))
    with interrupt.interruptible():
        obj = Broken()
        del obj
    assert len(seen) == 1 and isinstance(seen[0], ValueError)
