"""Stopping the local Ray instance a run started: now, or its processes in the background.

``ray.shutdown`` of a local instance does two things: it disconnects this process (the
driver's core worker: 0.05 s) and then stops the instance's processes (raylet, GCS, workers),
one kind after the other with a grace period each (1.1 s of a 1.13 s shutdown, measured on 2
cores). When the process ends after the command anyway (the ``sedtune`` console script,
:func:`service.cli.run`, calls :func:`stop_in_background`), :func:`stop` disconnects the
driver at once and leaves only the processes' stop to a thread, which runs while the results,
the figures and the MLflow runs are written; the thread is not a daemon, so the process waits
for it before it exits. In-process callers (the tests, the service) keep the default: Ray is
down when :func:`service.tuning.runner.run_job` returns.

The driver is never disconnected in the background: this process keeps running Python that
may still hold Ray objects (an object reference freed by the garbage collector calls into the
core worker), and a core worker called while it shuts down ends the process on the spot
("The core worker has already been shutdown ... The process will exit", exit code 1, no
line of sedtune's: measured in 4 of 25 demos when the whole ``ray.shutdown`` ran in the thread).
"""

from __future__ import annotations

import threading
from typing import Any

#: Whether :func:`stop` leaves the processes' stop to a background thread (module docstring).
_background = False
#: Background stops not yet waited for.
_pending: list[threading.Thread] = []


def stop_in_background(enabled: bool = True) -> None:
    """From now on, :func:`stop` stops the instance's processes in a background thread."""
    global _background
    _background = enabled


def stop(*, now: bool = False) -> None:
    """Shut down the local Ray instance this process started (its processes in the background if enabled).

    Args:
        now: Stop everything before returning even if the background is enabled (after a
            failure or an interrupt, when the caller raises next).
    """
    import ray

    if now or not _background:
        ray.shutdown()
        return
    node = _detach_node()
    ray.shutdown()  # the driver only: the node is detached
    if node is None:
        return
    t = threading.Thread(target=_stop_processes, args=(node,), name="sedtune-ray-shutdown")
    t.start()
    _pending.append(t)


def wait() -> None:
    """Wait until every stop begun in the background has ended (before Ray starts again)."""
    while _pending:
        _pending.pop().join()


def _detach_node() -> Any:
    """Take the local instance (``ray._private.node.Node``) from Ray's driver state, so that
    ``ray.shutdown`` disconnects the driver and leaves the processes running; None if this
    process started none (connected to a cluster)."""
    from ray._private import worker

    node = worker._global_node
    worker._global_node = None
    return node


def _stop_processes(node: Any) -> None:
    """What ``ray.shutdown`` does with a local instance after the driver's disconnect."""
    if node.is_head():
        node.destroy_external_storage()
    node.kill_all_processes(check_alive=False, allow_graceful=True)
