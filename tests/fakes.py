"""Fakes of the service's ports for unit tests and the API benchmark."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from service.server.submitter import (
    AlreadySubmittedError,
    RayJobState,
    Submitter,
    SubmitterError,
    UnknownJobError,
)


class FakeSubmitter(Submitter):
    """An in-memory cluster: jobs stay where a test puts them (:meth:`set`).

    Attributes:
        jobs: Ray id -> state.
        submitted: (submission id, entrypoint, env, metadata) per accepted submission.
        down: While True every call raises :class:`SubmitterError` (cluster unreachable).
        stopped: Ray ids asked to stop.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, RayJobState] = {}
        self.submitted: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        self.stopped: list[str] = []
        self.down = False
        self.on_submit: Callable[[str, str], None] | None = None
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise SubmitterError("cannot reach the Ray Jobs API at fake://cluster (down)")

    def submit(
        self,
        submission_id: str,
        entrypoint: str,
        env: dict[str, str],
        metadata: dict[str, str],
        working_dir: str | None = None,
    ) -> str:
        """Accept a job (PENDING)."""
        self._check()
        with self._lock:
            if submission_id in self.jobs:
                raise AlreadySubmittedError(f"Ray job {submission_id} already exists")
            self.jobs[submission_id] = RayJobState("PENDING")
            self.submitted.append((submission_id, entrypoint, dict(env), dict(metadata)))
        if self.on_submit is not None:
            self.on_submit(submission_id, entrypoint)
        return submission_id

    def state(self, ray_job_id: str) -> RayJobState:
        """The state a test set."""
        self._check()
        with self._lock:
            if ray_job_id not in self.jobs:
                raise UnknownJobError(f"fake cluster does not know job {ray_job_id}")
            return self.jobs[ray_job_id]

    def stop(self, ray_job_id: str) -> bool:
        """Stop at once (STOPPED)."""
        self._check()
        with self._lock:
            self.stopped.append(ray_job_id)
            st = self.jobs.get(ray_job_id)
            if st is None or st.status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return False
            self.jobs[ray_job_id] = RayJobState("STOPPED", "stopped by request")
            return True

    def ping(self) -> None:
        """Answers unless down."""
        self._check()

    def set(self, ray_job_id: str, status: str, message: str | None = None) -> None:
        """Move a job to ``status``."""
        with self._lock:
            self.jobs[ray_job_id] = RayJobState(status, message)


class FakeClock:
    """A settable clock (aware UTC).

    Args:
        start: The initial time.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        """Now."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward."""
        self.now += timedelta(seconds=seconds)
