"""Fixtures shared by the integration tests: one private local Ray per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A private local Ray (2 CPUs) for the module, unless one is already running in-process.

    ``address="local"`` starts a new instance even if another Ray runs on this machine.
    """
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()
