"""Schedules: cron lines with time zones that start jobs, one run at a time, warm-started.

Rules:

- **One run at a time.** A fire (cron or ``run now``) while the schedule's previous job is
  unfinished starts nothing and records a skipped run with the reason
  (``overlap: job j-… is RUNNING``).
- **Missed fires** (the service was down, or a tick came late): when several fire times are
  due at once, only the latest runs (trigger ``missed`` if more than one was due); each earlier
  one is recorded as skipped (``missed: …``), at most :data:`MAX_MISSED_RECORDS` of them, and
  one more line covers the rest. So a service that was down overnight runs the
  nightly retune once when it comes back, not once per lost night.
- **Re-validated at each fire.** The stored spec (with its warm start) is checked exactly as a
  submission is (:meth:`service.server.jobs.JobService.validate`: paths resolved and confined,
  options, the data): a folder swapped for a symlink out of the data roots since the schedule
  was created makes the fire start nothing; it is recorded as skipped with the one-line reason
  (``refused: data.scores: …``).
- **Paused** schedules do not fire; resuming sets the next fire time from now (fires while
  paused are not caught up). ``run now`` works on paused schedules.
- **Warm start.** Every run's bayes strategy starts from the ``best_params.json`` of the
  schedule's last successful job (``options.warm_start``); the source is recorded with the
  run (``warm_start``: job id, parameter file, strategies it was given to).
- **Drift.** When a run's job succeeds, its parameters and held-out F1 are compared with the
  previous success (:mod:`service.server.drift`), stored with the run.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import datetime
from typing import Any

from service.server.cron import CronSchedule
from service.server.idempotency import IdempotencyKey, request_hash
from service.server.jobs import Clock, ConflictError, JobService, NotFoundError, utcnow
from service.server.policy import FieldError
from service.store.records import RunRecord, ScheduleRecord
from service.store.repo import KeyTakenError, Store
from service.tuning.spec import JobSpec

LOG = logging.getLogger(__name__)

#: Skipped "missed" fires recorded one by one after downtime; the rest are counted in one line.
MAX_MISSED_RECORDS = 20
#: How the skip reason of a fire whose spec was refused starts.
REFUSED = "refused: "


class Scheduler:
    """Creates, changes and fires schedules.

    Args:
        store: The job store.
        jobs: Job service (validation, job records, submission).
        clock: Returns now (aware UTC); tests pass a fake.
    """

    def __init__(self, store: Store, jobs: JobService, clock: Clock = utcnow) -> None:
        self.store = store
        self.jobs = jobs
        self.clock = clock
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ CRUD

    def create(self, name: str, cron: str, timezone: str, spec: JobSpec) -> ScheduleRecord:
        """Validate and store a schedule.

        Raises:
            FieldError: Bad cron line, time zone or spec (field paths ``cron``, ``timezone``,
                ``spec.<path>``); nothing is stored.
            ConflictError: The name is taken.
        """
        return self.create_once(name, cron, timezone, spec)[0]

    def create_once(self, name: str, cron: str, timezone: str, spec: JobSpec,
                    key: IdempotencyKey | None = None) -> tuple[ScheduleRecord, bool]:
        """:meth:`create`, under an optional idempotency key.

        Returns:
            The schedule, and True when an earlier request with the same key created it.

        Raises:
            FieldError: As :meth:`create`.
            ConflictError: The name is taken, or the key's schedule has been deleted.
            KeyReusedError: The key came before with another request.
        """
        digest = request_hash({"name": name, "cron": cron, "timezone": timezone,
                               "spec": spec.model_dump(mode="json")})
        if key is not None and (found := self.store.get_key(key.principal, "schedules", key.key)):
            return self._replayed(key.check_same(found, digest, "schedule"), key), True
        try:
            cs = CronSchedule.parse(cron, timezone)
        except FieldError:
            raise
        except Exception as e:
            field, _, rule = str(e).partition(": ")
            raise FieldError(field, rule) from None
        try:
            self.jobs.validate(spec)
        except FieldError as e:
            raise FieldError(f"spec.{e.field}" if e.field != "spec" else "spec", e.rule) from None
        if self.store.schedule_by_name(name) is not None:
            raise ConflictError(f"a schedule named {name!r} already exists")
        now = self.clock()
        rec = ScheduleRecord(id=f"s-{uuid.uuid4().hex[:12]}", name=name, cron=cs.expr, timezone=cs.tz,
                             spec=spec.model_dump(mode="json"), paused=False, created_at=now,
                             last_run_at=None, next_run_at=cs.next_after(now))
        record = None if key is None else key.record("schedules", digest, rec.id, now)
        try:
            return self.store.add_schedule(rec, record), False
        except KeyTakenError:  # a concurrent request with the same key stored its schedule first
            assert key is not None  # raised only when a key is stored
            found = self.store.get_key(key.principal, "schedules", key.key)
            assert found is not None
            return self._replayed(key.check_same(found, digest, "schedule"), key), True
        except Exception as e:  # a concurrent create with the same name
            if self.store.schedule_by_name(name) is not None:
                raise ConflictError(f"a schedule named {name!r} already exists") from e
            raise

    def _replayed(self, schedule_id: str, key: IdempotencyKey) -> ScheduleRecord:
        s = self.store.get_schedule(schedule_id)
        if s is None:
            raise ConflictError(f"schedule {schedule_id}, created with Idempotency-Key {key.key!r}, has been "
                                "deleted; send a new key to create it again")
        return s

    def get(self, schedule_id: str) -> ScheduleRecord:
        """A schedule.

        Raises:
            NotFoundError: No such schedule.
        """
        s = self.store.get_schedule(schedule_id)
        if s is None:
            raise NotFoundError(f"schedule {schedule_id!r} not found")
        return s

    def pause(self, schedule_id: str) -> ScheduleRecord:
        """Stop firing (idempotent)."""
        return self.store.update_schedule(schedule_id, paused=True, next_run_at=None) or self.get(schedule_id)

    def resume(self, schedule_id: str) -> ScheduleRecord:
        """Fire again from the next cron time after now (idempotent)."""
        s = self.get(schedule_id)
        if not s.paused:
            return s
        nxt = CronSchedule(s.cron, s.timezone).next_after(self.clock())
        return self.store.update_schedule(schedule_id, paused=False, next_run_at=nxt) or self.get(schedule_id)

    def delete(self, schedule_id: str) -> None:
        """Delete a schedule and its history (its jobs stay).

        Raises:
            NotFoundError: No such schedule.
        """
        with self._lock:
            if not self.store.delete_schedule(schedule_id):
                raise NotFoundError(f"schedule {schedule_id!r} not found")

    # ------------------------------------------------------------------ firing

    def run_now(self, schedule_id: str) -> RunRecord:
        """Fire a schedule now (trigger ``manual``); a skipped run is returned if one is still going.

        Raises:
            NotFoundError: No such schedule.
        """
        s = self.get(schedule_id)
        return self._fire(s, self.clock(), "manual", None)

    def tick(self) -> list[RunRecord]:
        """Fire every due schedule (see the module docstring for missed fires).

        Returns:
            The runs recorded (started or skipped).
        """
        now = self.clock()
        out: list[RunRecord] = []
        for s in self.store.list_schedules():
            if s.paused or s.next_run_at is None or s.next_run_at > now:
                continue
            try:
                out += self._fire_due(s, now)
            except Exception:
                LOG.exception("schedule %s (%s): firing failed", s.id, s.name)
        return out

    def _fire_due(self, s: ScheduleRecord, now: datetime) -> list[RunRecord]:
        cs = CronSchedule(s.cron, s.timezone)
        start = s.next_run_at or now
        latest = cs.last_at_or_before(now)
        if latest < start:
            self.store.update_schedule(s.id, next_run_at=cs.next_after(now))
            return []
        missed = [t for t in cs.fires_between(start, latest, limit=MAX_MISSED_RECORDS + 2) if t < latest]
        out = []
        for t in missed[:MAX_MISSED_RECORDS]:
            out.append(self.store.record_fire(
                s.id, t, "cron", now,
                skip_reason=f"missed: the service did not run at {t.isoformat()}; only the latest due fire "
                            f"({latest.isoformat()}) runs"))
        if len(missed) > MAX_MISSED_RECORDS:
            first = missed[MAX_MISSED_RECORDS]
            out.append(self.store.record_fire(
                s.id, first, "cron", now,
                skip_reason=f"missed: further fires from {first.isoformat()} until before "
                            f"{latest.isoformat()} "
                            "were not run either (not recorded one by one)"))
        out.append(self._fire(s, latest, "missed" if missed else "cron", cs.next_after(now)))
        return out

    def _fire(
        self, s: ScheduleRecord, fire_time: datetime, trigger: str, next_run: datetime | None
    ) -> RunRecord:
        sched_values: dict[str, Any] = {} if next_run is None else {"next_run_at": next_run}
        now = self.clock()
        with self._lock:
            if self.store.get_schedule(s.id) is None:
                raise NotFoundError(f"schedule {s.id!r} not found")
            last = self.store.last_job_of_schedule(s.id)
            if last is not None and not last.final:
                reason = f"overlap: the previous run's job {last.id} is {last.status}; one run at a time"
                LOG.info("schedule %s: fire at %s skipped (%s)", s.name, fire_time.isoformat(), reason)
                return self.store.record_fire(s.id, fire_time, trigger, now, skip_reason=reason,
                                              schedule_values=sched_values)
            spec, warm = self._warm_spec(s)
            try:
                self.jobs.validate(spec)
            except FieldError as e:
                reason = REFUSED + " ".join(str(e).split())
                LOG.warning("schedule %s: fire at %s refused (%s)", s.name, fire_time.isoformat(), reason)
                return self.store.record_fire(s.id, fire_time, trigger, now, skip_reason=reason,
                                              warm_start=warm, schedule_values=sched_values)
            job = self.jobs.new_job(spec, schedule_id=s.id)
            run = self.store.record_fire(s.id, fire_time, trigger, now, job=job, warm_start=warm,
                                         schedule_values={**sched_values, "last_run_at": fire_time})
        LOG.info("schedule %s: fire at %s started job %s", s.name, fire_time.isoformat(), job.id)
        self.jobs.dispatch(job)
        return run

    def _warm_spec(self, s: ScheduleRecord) -> tuple[JobSpec, dict[str, Any] | None]:
        """The schedule's spec with bayes warm-started from the last success, and the source."""
        spec = JobSpec.model_validate(s.spec)
        prev = self.store.last_success_of_schedule(s.id)
        if prev is None:
            return spec, None
        path = ((prev.result or {}).get("best_params_path")
                or os.path.join(prev.output_dir, "best_params.json"))
        if not os.path.exists(path):
            return spec, {"job_id": prev.id, "params_path": None, "applied_to": [],
                          "note": f"the last success's parameter file {path} is not readable; no warm start"}
        doc = spec.model_dump(mode="json")
        applied = []
        for st in doc["strategies"]:
            if st["name"] == "bayes":
                st["options"] = {**(st.get("options") or {}), "warm_start": path}
                applied.append(st["name"])
        warm: dict[str, Any] = {"job_id": prev.id, "params_path": path, "applied_to": applied}
        if not applied:
            warm["note"] = "the spec has no bayes strategy: nothing takes a warm start"
        return JobSpec.model_validate(doc), warm
