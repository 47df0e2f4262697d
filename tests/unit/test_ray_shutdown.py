"""A local Ray instance stops in the background only when asked, and is never raced by a new start."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import ray

from service.tuning import ray_stop, runner


@pytest.fixture
def slow_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """ray.shutdown takes 0.3 s; ray.init and the interrupt handlers are recorded, not run."""
    events: list[str] = []

    def slow_shutdown() -> None:
        events.append("shutdown begins")
        time.sleep(0.3)
        events.append("shutdown done")

    monkeypatch.setattr(ray, "shutdown", slow_shutdown)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: events.append("init"))
    monkeypatch.setattr(runner.interrupt, "reinstall", lambda: None)
    yield events
    ray_stop.wait()
    ray_stop.stop_in_background(False)


def test_stop_is_synchronous_by_default(slow_ray: list[str]) -> None:
    ray_stop.stop()
    assert slow_ray == ["shutdown begins", "shutdown done"]
    assert not ray_stop._pending


def test_in_the_background_init_ray_waits_for_the_shutdown(slow_ray: list[str]) -> None:
    ray_stop.stop_in_background()
    ray_stop.stop()
    assert slow_ray == [] or slow_ray == ["shutdown begins"]  # stop() returned at once
    thread = ray_stop._pending[0]
    # Not a daemon: Python's exit (and service.cli.run) wait for it before the process ends.
    assert isinstance(thread, threading.Thread) and not thread.daemon
    assert runner.init_ray(None, 2) is True
    assert slow_ray == ["shutdown begins", "shutdown done", "init"]
    assert not ray_stop._pending
