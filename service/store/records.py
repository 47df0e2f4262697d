"""Plain records of the store (no SQLAlchemy session attached) and job states."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Stored, not yet accepted by Ray (Ray was unreachable); the reconciler submits it again.
QUEUED = "QUEUED"
#: Ray's states (ray.job_submission.JobStatus).
PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"
STATES = (QUEUED, PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)
FINAL = frozenset({SUCCEEDED, FAILED, STOPPED})
ACTIVE = frozenset(STATES) - FINAL


@dataclass(frozen=True)
class JobRecord:
    """A stored job.

    Attributes:
        id: Job id (also the Ray submission id).
        name: The spec's name.
        spec: The effective spec (validated, output dir and tracking filled in) as JSON.
        status: One of :data:`STATES`.
        ray_job_id: Ray submission id once Ray accepted the job.
        output_dir: Where the job writes its results and ``status.json``.
        schedule_id: The schedule that started it, if any.
        created_at: When it was stored (UTC).
        submitted_at: When Ray accepted it.
        started_at: When Ray reported it running (first seen).
        finished_at: When it reached a final state (first seen).
        error: Why it failed or was stopped.
        result: Summary of a successful result (see :mod:`service.results.read`).
    """

    id: str
    name: str
    spec: dict[str, Any]
    status: str
    ray_job_id: str | None
    output_dir: str
    schedule_id: str | None
    created_at: datetime
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def final(self) -> bool:
        """True once the job cannot change any more."""
        return self.status in FINAL


@dataclass(frozen=True)
class ScheduleRecord:
    """A stored schedule.

    Attributes:
        id: Schedule id.
        name: Unique name.
        cron: Five-field cron line.
        timezone: IANA time zone of the cron line.
        spec: The job spec of every run (validated JSON).
        paused: Paused schedules do not fire (``run now`` still works).
        created_at: Creation time (UTC).
        last_run_at: Fire time of the last run that started a job.
        next_run_at: Next fire time (UTC), None while paused.
    """

    id: str
    name: str
    cron: str
    timezone: str
    spec: dict[str, Any]
    paused: bool
    created_at: datetime
    last_run_at: datetime | None
    next_run_at: datetime | None


@dataclass(frozen=True)
class RunRecord:
    """One fire of a schedule.

    Attributes:
        id: Sequence number.
        schedule_id: The schedule.
        fire_time: The cron fire time (or the request time for ``run now``), UTC.
        trigger: ``cron``, ``manual`` (run now) or ``missed`` (catch-up after downtime).
        job_id: The job started, or None when skipped.
        skip_reason: Why no job was started (overlap, missed fire), else None.
        warm_start: Where the bayes strategy was warm-started from (job id and parameter
            file of the schedule's last success), or None.
        drift: Parameter and held-out F1 changes against the previous success, once the job
            succeeded (see :mod:`service.server.drift`).
        created_at: When the fire was recorded.
    """

    id: int
    schedule_id: str
    fire_time: datetime
    trigger: str
    job_id: str | None
    skip_reason: str | None
    warm_start: dict[str, Any] | None
    drift: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True)
class IdempotencyRecord:
    """A stored ``Idempotency-Key``: the same key again answers what the first request made.

    Attributes:
        principal: Hash of the client's token (keys of different tokens never meet).
        scope: ``jobs`` or ``schedules``.
        key: The client's key.
        request_hash: SHA-256 of the request's canonical JSON (a reused key with another
            request is refused).
        resource_id: The job or schedule the first request created.
        created_at: When it was stored (UTC).
    """

    principal: str
    scope: str
    key: str
    request_hash: str
    resource_id: str
    created_at: datetime
