"""Stopping the local Ray instance a run started: now, or in the background when the process ends.

``ray.shutdown`` of a local instance mostly waits for its processes to exit, one kind after
the other (1.1-1.4 s measured on 2 cores). When the process ends after the command anyway
(the ``sedtune`` console script, :func:`service.cli.run`, calls :func:`stop_in_background`),
Ray stops in a thread while the results, the figures and the MLflow runs are written; the
thread is not a daemon, so the process waits for it before it exits. In-process callers (the
tests, the service) keep the default: Ray is down when :func:`service.tuning.runner.run_job`
returns.
"""

from __future__ import annotations

import threading

#: Whether :func:`stop` leaves the shutdown to a background thread (see the module docstring).
_background = False
#: Background shutdowns not yet waited for.
_pending: list[threading.Thread] = []


def stop_in_background(enabled: bool = True) -> None:
    """From now on, :func:`stop` returns at once and Ray stops in a background thread."""
    global _background
    _background = enabled


def stop(*, now: bool = False) -> None:
    """Shut down the local Ray instance this process started (in the background if enabled).

    Args:
        now: Stop before returning even if the background is enabled (after a failure or an
            interrupt, when the caller raises next).
    """
    import ray

    if now or not _background:
        ray.shutdown()
        return
    t = threading.Thread(target=ray.shutdown, name="sedtune-ray-shutdown")
    t.start()
    _pending.append(t)


def wait() -> None:
    """Wait until every shutdown begun in the background has ended (before Ray starts again)."""
    while _pending:
        _pending.pop().join()
