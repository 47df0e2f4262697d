"""The local Ray instance is stopped in the background, and never raced by a new start."""

from __future__ import annotations

import threading
import time

import pytest
import ray

from service.tuning import runner


def test_init_ray_waits_for_a_background_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    running = threading.Event()

    def slow_shutdown() -> None:
        running.set()
        time.sleep(0.3)
        events.append("shutdown done")

    monkeypatch.setattr(ray, "shutdown", slow_shutdown)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: events.append("init"))
    monkeypatch.setattr(runner.interrupt, "reinstall", lambda: None)

    runner.shutdown_ray_in_background()
    assert running.wait(5)
    assert events == []  # the caller went on while Ray was stopping
    # Not a daemon: Python's exit (and service.cli.run) wait for it before the process ends.
    assert not runner._SHUTDOWNS[0].daemon
    assert runner.init_ray(None, 2) is True
    assert events == ["shutdown done", "init"]
    assert not runner._SHUTDOWNS
