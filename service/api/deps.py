"""What the routes use: one :class:`Services` per app, wired by :func:`service.api.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.server.jobs import JobService
from service.server.scheduler import Scheduler
from service.server.settings import Settings
from service.server.submitter import Submitter
from service.store.repo import Store


@dataclass
class Services:
    """The app's adapters and services.

    Attributes:
        settings: Configuration.
        store: Job store.
        submitter: Cluster port (Ray Jobs API, or a fake in unit tests).
        jobs: Job service.
        scheduler: Schedules.
    """

    settings: Settings
    store: Store
    submitter: Submitter
    jobs: JobService
    scheduler: Scheduler


def services(request: Request) -> Services:
    """The app's :class:`Services` (a FastAPI dependency)."""
    svc: Services = request.app.state.services
    return svc
