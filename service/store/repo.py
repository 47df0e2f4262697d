"""The repository: every read and write of jobs, schedules, schedule runs and idempotency keys.

One :class:`Store` per process, safe to share between threads (a session per call). SQLite
(embedded default) runs in WAL mode with a busy timeout so that the API threads, the
reconciler and the scheduler can write concurrently; PostgreSQL is used as is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, delete, event, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.store.models import Base, IdempotencyKeyRow, JobRow, ScheduleRow, ScheduleRunRow
from service.store.records import IdempotencyRecord, JobRecord, RunRecord, ScheduleRecord

SQLITE_BUSY_TIMEOUT_S = 30.0

_R = TypeVar("_R", JobRecord, ScheduleRecord, RunRecord, IdempotencyRecord)


class KeyTakenError(Exception):
    """The idempotency key is stored already (a concurrent request with the same key won);
    nothing of this request was stored."""


def _record(cls: type[_R], row: Any) -> _R:
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets its folder created, WAL and a busy timeout.

    Args:
        url: SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://...``).
    """
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if u.database and u.database != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(u.database)), exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _pragmas(conn: Any, _record: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


class Store:
    """Jobs, schedules and schedule runs.

    Args:
        url: SQLAlchemy URL; tables are created if missing.
    """

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    def ping(self) -> None:
        """Run ``SELECT 1`` (raises if the database cannot be reached)."""
        with self.engine.connect() as c:
            c.execute(text("SELECT 1"))

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    # ------------------------------------------------------------------ jobs

    def add_job(self, job: JobRecord, key: IdempotencyRecord | None = None) -> JobRecord:
        """Store a new job, and its idempotency key in the same transaction.

        Raises:
            KeyTakenError: ``key`` is stored already; the job was not stored either.
        """
        self._add(JobRow(**{f.name: getattr(job, f.name) for f in fields(JobRecord)}), key)
        return job

    def _add(self, row: Base, key: IdempotencyRecord | None) -> None:
        try:
            with self._tx() as s:
                s.add(row)
                if key is not None:
                    s.flush()  # the resource first: its own constraint errors are not the key's
                    s.add(IdempotencyKeyRow(**{f.name: getattr(key, f.name)
                                               for f in fields(IdempotencyRecord)}))
        except IntegrityError:
            if key is not None and self.get_key(key.principal, key.scope, key.key) is not None:
                raise KeyTakenError(f"idempotency key {key.key!r} is stored already") from None
            raise

    def get_key(self, principal: str, scope: str, key: str) -> IdempotencyRecord | None:
        """A stored idempotency key, or None."""
        with self._tx() as s:
            row = s.get(IdempotencyKeyRow, (principal, scope, key))
            return None if row is None else _record(IdempotencyRecord, row)

    def get_job(self, job_id: str) -> JobRecord | None:
        """A job by id, or None."""
        with self._tx() as s:
            row = s.get(JobRow, job_id)
            return None if row is None else _record(JobRecord, row)

    def list_jobs(
        self, status: str | None = None, name: str | None = None, schedule_id: str | None = None,
        limit: int = 100, offset: int = 0,
    ) -> list[JobRecord]:
        """Jobs, newest first, filtered by status, name and schedule."""
        q = select(JobRow)
        if status is not None:
            q = q.where(JobRow.status == status)
        if name is not None:
            q = q.where(JobRow.name == name)
        if schedule_id is not None:
            q = q.where(JobRow.schedule_id == schedule_id)
        q = q.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset)
        with self._tx() as s:
            return [_record(JobRecord, r) for r in s.scalars(q)]

    def jobs_in(self, states: Sequence[str]) -> list[JobRecord]:
        """Every job in one of ``states``, oldest first."""
        q = select(JobRow).where(JobRow.status.in_(list(states))).order_by(JobRow.created_at)
        with self._tx() as s:
            return [_record(JobRecord, r) for r in s.scalars(q)]

    def update_job(
        self, job_id: str, expect_status: Sequence[str] | None = None, **values: Any
    ) -> JobRecord | None:
        """Change fields of a job.

        Args:
            job_id: The job.
            expect_status: Change only if the job is in one of these states (compare and set,
                so the reconciler and a cancel never overwrite each other's final state).
            **values: Fields of :class:`JobRecord`.

        Returns:
            The job after the change, or None if it does not exist or was not in ``expect_status``.
        """
        q = update(JobRow).where(JobRow.id == job_id)
        if expect_status is not None:
            q = q.where(JobRow.status.in_(list(expect_status)))
        with self._tx() as s:
            # One UPDATE ... WHERE status IN (...): atomic on SQLite and PostgreSQL alike.
            if s.execute(q.values(**values)).rowcount != 1:  # type: ignore[attr-defined]
                return None
            row = s.get(JobRow, job_id, populate_existing=True)
            return None if row is None else _record(JobRecord, row)

    # ------------------------------------------------------------------ schedules

    def add_schedule(self, sched: ScheduleRecord, key: IdempotencyRecord | None = None) -> ScheduleRecord:
        """Store a new schedule (the caller checked the name is free), and its idempotency key.

        Raises:
            KeyTakenError: ``key`` is stored already; the schedule was not stored either.
            sqlalchemy.exc.IntegrityError: The name is taken (a concurrent create).
        """
        self._add(ScheduleRow(**{f.name: getattr(sched, f.name) for f in fields(ScheduleRecord)}), key)
        return sched

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """A schedule by id, or None."""
        with self._tx() as s:
            row = s.get(ScheduleRow, schedule_id)
            return None if row is None else _record(ScheduleRecord, row)

    def schedule_by_name(self, name: str) -> ScheduleRecord | None:
        """A schedule by name, or None."""
        with self._tx() as s:
            row = s.scalars(select(ScheduleRow).where(ScheduleRow.name == name)).first()
            return None if row is None else _record(ScheduleRecord, row)

    def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        with self._tx() as s:
            rows = s.scalars(select(ScheduleRow).order_by(ScheduleRow.name))
            return [_record(ScheduleRecord, r) for r in rows]

    def update_schedule(self, schedule_id: str, **values: Any) -> ScheduleRecord | None:
        """Change fields of a schedule; None if it does not exist."""
        with self._tx() as s:
            row = s.get(ScheduleRow, schedule_id, with_for_update=True)
            if row is None:
                return None
            for k, v in values.items():
                setattr(row, k, v)
            s.flush()
            return _record(ScheduleRecord, row)

    def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule and its run history (its jobs stay); False if it did not exist."""
        with self._tx() as s:
            s.execute(delete(ScheduleRunRow).where(ScheduleRunRow.schedule_id == schedule_id))
            n = s.execute(delete(ScheduleRow).where(ScheduleRow.id == schedule_id)).rowcount  # type: ignore[attr-defined]
            return bool(n)

    # ------------------------------------------------------------------ schedule runs

    def record_fire(
        self, schedule_id: str, fire_time: datetime, trigger: str, created_at: datetime,
        job: JobRecord | None = None, skip_reason: str | None = None,
        warm_start: dict[str, Any] | None = None, schedule_values: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Record one fire in one transaction: the run, its job (if any) and schedule fields.

        Args:
            schedule_id: The schedule.
            fire_time: The fire time (UTC).
            trigger: ``cron``, ``manual`` or ``missed``.
            created_at: Now.
            job: The job started, stored with the run.
            skip_reason: Why no job was started.
            warm_start: Warm-start source of the job.
            schedule_values: Schedule fields to set (``next_run_at``, ``last_run_at``).
        """
        with self._tx() as s:
            if job is not None:
                s.add(JobRow(**{f.name: getattr(job, f.name) for f in fields(JobRecord)}))
            row = ScheduleRunRow(schedule_id=schedule_id, fire_time=fire_time, trigger=trigger,
                                 job_id=job.id if job else None, skip_reason=skip_reason,
                                 warm_start=warm_start, drift=None, created_at=created_at)
            s.add(row)
            if schedule_values:
                sched = s.get(ScheduleRow, schedule_id, with_for_update=True)
                if sched is not None:
                    for k, v in schedule_values.items():
                        setattr(sched, k, v)
            s.flush()
            return _record(RunRecord, row)

    def runs(self, schedule_id: str, limit: int = 100, offset: int = 0) -> list[RunRecord]:
        """A schedule's runs, newest first."""
        q = (select(ScheduleRunRow).where(ScheduleRunRow.schedule_id == schedule_id)
             .order_by(ScheduleRunRow.id.desc()).limit(limit).offset(offset))
        with self._tx() as s:
            return [_record(RunRecord, r) for r in s.scalars(q)]

    def run_of_job(self, job_id: str) -> RunRecord | None:
        """The schedule run that started ``job_id``, or None."""
        with self._tx() as s:
            row = s.scalars(select(ScheduleRunRow).where(ScheduleRunRow.job_id == job_id)).first()
            return None if row is None else _record(RunRecord, row)

    def set_run_drift(self, run_id: int, drift: dict[str, Any]) -> None:
        """Store the drift of a run."""
        with self._tx() as s:
            row = s.get(ScheduleRunRow, run_id)
            if row is not None:
                row.drift = drift

    def last_job_of_schedule(self, schedule_id: str) -> JobRecord | None:
        """The most recently started job of a schedule, or None."""
        q = (select(JobRow).join(ScheduleRunRow, ScheduleRunRow.job_id == JobRow.id)
             .where(ScheduleRunRow.schedule_id == schedule_id).order_by(ScheduleRunRow.id.desc()).limit(1))
        with self._tx() as s:
            row = s.scalars(q).first()
            return None if row is None else _record(JobRecord, row)

    def last_success_of_schedule(self, schedule_id: str, before_job: str | None = None) -> JobRecord | None:
        """The schedule's most recent SUCCEEDED job (started before run of ``before_job``, if given)."""
        q = (select(JobRow).join(ScheduleRunRow, ScheduleRunRow.job_id == JobRow.id)
             .where(ScheduleRunRow.schedule_id == schedule_id, JobRow.status == "SUCCEEDED"))
        if before_job is not None:
            own = select(ScheduleRunRow.id).where(ScheduleRunRow.job_id == before_job).scalar_subquery()
            q = q.where(ScheduleRunRow.id < own)
        q = q.order_by(ScheduleRunRow.id.desc()).limit(1)
        with self._tx() as s:
            row = s.scalars(q).first()
            return None if row is None else _record(JobRecord, row)
