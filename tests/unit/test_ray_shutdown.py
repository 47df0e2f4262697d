"""A local Ray instance's processes stop in the background only when asked, never raced by a new start."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import ray

from service.tuning import ray_stop, runner


@pytest.fixture
def slow_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The driver's disconnect is recorded; stopping the processes takes 0.3 s; ray.init and
    the interrupt handlers are recorded, not run."""
    events: list[str] = []

    def slow_processes_stop(node: object) -> None:
        events.append(f"processes stop begins ({node})")
        time.sleep(0.3)
        events.append("processes stopped")

    monkeypatch.setattr(ray, "shutdown", lambda: events.append("driver disconnected"))
    monkeypatch.setattr(ray_stop, "_detach_node", lambda: "node")
    monkeypatch.setattr(ray_stop, "_stop_processes", slow_processes_stop)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: events.append("init"))
    monkeypatch.setattr(runner.interrupt, "reinstall", lambda: None)
    yield events
    ray_stop.wait()
    ray_stop.stop_in_background(False)


def test_stop_is_synchronous_by_default(slow_ray: list[str]) -> None:
    ray_stop.stop()
    assert slow_ray == ["driver disconnected"]  # ray.shutdown itself: the driver and the processes
    assert not ray_stop._pending


def test_in_the_background_the_driver_disconnects_first_and_init_ray_waits(slow_ray: list[str]) -> None:
    ray_stop.stop_in_background()
    ray_stop.stop()
    # stop() returned with the driver disconnected, the processes' stop at most begun.
    assert slow_ray[0] == "driver disconnected"
    assert slow_ray[1:] in ([], ["processes stop begins (node)"])
    thread = ray_stop._pending[0]
    # Not a daemon: Python's exit (and service.cli.run) wait for it before the process ends.
    assert isinstance(thread, threading.Thread) and not thread.daemon
    assert runner.init_ray(None, 2) is True
    assert slow_ray == ["driver disconnected", "processes stop begins (node)", "processes stopped", "init"]
    assert not ray_stop._pending


def test_connected_to_a_cluster_nothing_is_left_to_stop(
    slow_ray: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray_stop, "_detach_node", lambda: None)
    ray_stop.stop_in_background()
    ray_stop.stop()
    assert slow_ray == ["driver disconnected"]
    assert not ray_stop._pending


def test_stop_now_is_synchronous_in_the_background_mode(slow_ray: list[str]) -> None:
    ray_stop.stop_in_background()
    ray_stop.stop(now=True)
    assert slow_ray == ["driver disconnected"]
    assert not ray_stop._pending
