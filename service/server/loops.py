"""The service's background loops: the Ray reconciler and the scheduler, each in a thread.

Both run once at startup (so a restarted service catches up with Ray and with missed fires
at once) and then every ``reconcile_interval_s`` / ``scheduler_tick_s`` seconds until stopped.
A failing round is logged and the loop goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

LOG = logging.getLogger(__name__)


class Loop:
    """Calls ``fn`` now and then every ``interval_s`` seconds in a daemon thread.

    Args:
        name: Thread name (for logs).
        fn: The work of one round.
        interval_s: Seconds between the end of a round and the start of the next.
    """

    def __init__(self, name: str, fn: Callable[[], object], interval_s: float) -> None:
        self.name = name
        self.fn = fn
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.fn()
            except Exception:
                LOG.exception("%s: round failed; retrying in %.1f s", self.name, self.interval_s)
            self._stop.wait(self.interval_s)

    def start(self) -> Loop:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the loop to stop and wait for the current round (at most ``timeout_s`` seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
