"""Jobs: validate and store a submission, hand it to Ray, cancel it, reconcile Ray's state.

The order of a submission makes a crash at any point harmless: the job is stored (``QUEUED``)
before Ray hears of it, Ray's submission id is the job id (a repeated submission is refused by
Ray, never run twice), and the reconciler submits ``QUEUED`` jobs again and copies Ray's state
of every other unfinished job into the store, at startup and every few seconds. A client that
never got its answer sends the request again with the same ``Idempotency-Key`` and gets the
job stored the first time (:mod:`service.server.idempotency`).

Paths are checked where the data is opened (:mod:`service.server.confine`): at submission,
again each time a stored job is handed to Ray (a job refused then ends ``FAILED`` with the
reason, never reaching Ray), and by the job process itself, with the roots written into its job
file (:mod:`service.server.jobfile`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from envs.errors import SedtuneInputError
from service.results.read import ResultMissingError, summarize
from service.results.status import read_status
from service.server.confine import Confinement, confine_spec
from service.server.drift import FORMAT as DRIFT_FORMAT
from service.server.drift import compute_drift
from service.server.entrypoint import build_entrypoint, new_job_id
from service.server.idempotency import IdempotencyKey, request_hash
from service.server.jobfile import jobfile_path, write_jobfile
from service.server.limits import check_spec_size
from service.server.policy import FieldError, check_options, check_policy, effective_spec, split_field
from service.server.settings import Settings
from service.server.submitter import AlreadySubmittedError, Submitter, SubmitterError, UnknownJobError
from service.store.records import (
    ACTIVE,
    FAILED,
    FINAL,
    PENDING,
    QUEUED,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    JobRecord,
)
from service.store.repo import KeyTakenError, Store
from service.tuning.spec import JobSpec

LOG = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Now, aware UTC."""
    return datetime.now(UTC)


class NotFoundError(Exception):
    """No such job or schedule."""


class ConflictError(Exception):
    """The request conflicts with the current state (a finished job cannot be cancelled)."""


class JobService:
    """Submit, cancel and reconcile jobs.

    Args:
        settings: Service settings.
        store: The job store.
        submitter: The cluster port.
        clock: Returns now (aware UTC); tests pass a fake.
    """

    def __init__(self, settings: Settings, store: Store, submitter: Submitter, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.store = store
        self.submitter = submitter
        self.clock = clock
        self.confinement = Confinement.of(settings)
        self._attempts: dict[str, float] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ submission

    def validate(self, spec: JobSpec) -> None:
        """Every check a spec passes before anything is stored (a schedule's fire makes them too).

        Raises:
            FieldError: Size, path policy and confinement, strategy options, or (with
                ``check_data``) the data, opened at the resolved paths that were checked.
        """
        check_policy(spec, self.settings)
        check_spec_size(spec, self.settings.max_spec_bytes)
        resolved = confine_spec(spec, self.confinement)
        check_options(spec)
        if self.settings.check_data:
            from service.tuning.check import check_job

            try:
                check_job(resolved)
            except SedtuneInputError as e:
                field, rule = split_field(str(e))
                raise FieldError(field or "spec", rule) from None

    def new_job(self, spec: JobSpec, schedule_id: str | None = None) -> JobRecord:
        """A QUEUED job record for a validated spec (not stored)."""
        job_id = new_job_id()
        eff = effective_spec(spec, self.settings, job_id)
        return JobRecord(id=job_id, name=spec.name, spec=eff.model_dump(mode="json"), status=QUEUED,
                         ray_job_id=None, output_dir=eff.output_dir, schedule_id=schedule_id,
                         created_at=self.clock())

    def submit(self, spec: JobSpec) -> JobRecord:
        """Validate, store, hand to Ray.

        Raises:
            FieldError: The spec is refused (nothing is stored).
        """
        self.validate(spec)
        job = self.store.add_job(self.new_job(spec))
        LOG.info("job %s (%s) stored", job.id, job.name)
        return self.dispatch(job)

    def submit_once(self, spec: JobSpec, key: IdempotencyKey) -> tuple[JobRecord, bool]:
        """:meth:`submit` under an idempotency key: the job of an earlier request with the same key.

        Returns:
            The job, and True when it was created by an earlier request (a replay).

        Raises:
            KeyReusedError: The key came before with another spec.
            FieldError: The spec is refused (nothing is stored).
        """
        digest = request_hash(spec.model_dump(mode="json"))
        found = self.store.get_key(key.principal, "jobs", key.key)
        if found is not None:
            return self.get(key.check_same(found, digest, "job")), True
        self.validate(spec)
        job = self.new_job(spec)
        try:
            self.store.add_job(job, key.record("jobs", digest, job.id, self.clock()))
        except KeyTakenError:  # a concurrent request with the same key stored its job first
            found = self.store.get_key(key.principal, "jobs", key.key)
            assert found is not None
            return self.get(key.check_same(found, digest, "job")), True
        LOG.info("job %s (%s) stored", job.id, job.name)
        return self.dispatch(job), False

    def jobfile(self, job_id: str) -> str:
        """Where the job file of ``job_id`` is written (under the service's own shared folder)."""
        return jobfile_path(self.settings.service_dir, job_id)

    def dispatch(self, job: JobRecord) -> JobRecord:
        """Submit a stored QUEUED job to Ray; it stays QUEUED (retried later) if Ray cannot be reached.

        Its paths are confined again first (a folder may have been swapped since it was stored):
        a refused job ends FAILED with the reason and never reaches Ray. The spec goes to Ray in
        a job file, its paths resolved, with the roots the job checks them against once more.
        """
        try:
            spec = confine_spec(JobSpec.model_validate(job.spec), self.confinement)
        except FieldError as e:
            return self._refuse(job, f"refused before it ran: {e}")
        path = self.jobfile(job.id)
        try:
            digest = write_jobfile(path, job.id, spec, self.confinement.to_json())
        except OSError as e:
            LOG.warning("job %s stays QUEUED: cannot write its job file %s: %s", job.id, path, e)
            return self.store.update_job(job.id, [QUEUED], error=f"waiting: cannot write the job file {path} "
                                                                  f"({e.strerror or e})") or job
        entrypoint = build_entrypoint(self.settings.job_python, job.id, path, digest)
        env = {"SEDTUNE_JOB_ID": job.id}
        meta = {"sedtune_job": job.id, "name": job.name}
        if job.schedule_id:
            meta["schedule"] = job.schedule_id
        with self._lock:
            self._attempts[job.id] = time.monotonic()
        try:
            ray_id = self.submitter.submit(job.id, entrypoint, env, meta)
        except AlreadySubmittedError:
            ray_id = job.id
        except SubmitterError as e:
            LOG.warning("job %s stays QUEUED: %s", job.id, e)
            return self.store.update_job(job.id, [QUEUED], error=f"waiting for Ray: {e}") or job
        updated = self.store.update_job(job.id, [QUEUED], status=PENDING, ray_job_id=ray_id,
                                        submitted_at=self.clock(), error=None)
        if updated is not None:
            LOG.info("job %s submitted to Ray as %s", job.id, ray_id)
            return updated
        current = self.store.get_job(job.id) or job
        if current.status == STOPPED and current.ray_job_id is None:
            # cancelled while being submitted: Ray must not run it either
            LOG.info("job %s was cancelled during its submission; stopping Ray job %s", job.id, ray_id)
            try:
                self.submitter.stop(ray_id)
            except SubmitterError as e:
                LOG.warning("job %s: cannot stop Ray job %s: %s", job.id, ray_id, e)
        return current

    def _refuse(self, job: JobRecord, reason: str) -> JobRecord:
        """End a QUEUED job FAILED without handing it to Ray."""
        line = " ".join(reason.split())[:2000]
        LOG.warning("job %s: %s", job.id, line)
        now = self.clock()
        return self.store.update_job(job.id, [QUEUED], status=FAILED, started_at=now, finished_at=now,
                                     error=line) or self.store.get_job(job.id) or job

    # ------------------------------------------------------------------ cancel

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job: a QUEUED one at once, a running one through Ray (STOPPED when Ray says so).

        Raises:
            NotFoundError: No such job.
            ConflictError: The job has already finished.
            SubmitterError: Ray cannot be reached.
        """
        job = self.get(job_id)
        if job.final:
            raise ConflictError(f"job {job_id} has already finished ({job.status}); "
                                "only unfinished jobs can be cancelled")
        if job.status == QUEUED:
            done = self.store.update_job(job_id, [QUEUED], status=STOPPED, finished_at=self.clock(),
                                         error="cancelled by request before Ray started it")
            if done is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.jobfile(job_id))
                return done
            job = self.store.get_job(job_id) or job
        if job.ray_job_id is not None:
            self.submitter.stop(job.ray_job_id)
            job = self.store.update_job(job_id, list(ACTIVE), error="cancelled by request") or job
            return self.reconcile_job(job)
        return job

    # ------------------------------------------------------------------ reconcile

    def reconcile_once(self) -> int:
        """Copy Ray's state of every unfinished job into the store; resubmit stale QUEUED jobs.

        Returns:
            Number of jobs whose state changed.
        """
        changed = 0
        now = time.monotonic()
        for job in self.store.jobs_in(sorted(ACTIVE)):
            if job.status == QUEUED:
                age = (self.clock() - job.created_at).total_seconds()
                with self._lock:
                    last = self._attempts.get(job.id)
                wait = self.settings.resubmit_after_s
                if age >= wait and (last is None or now - last >= wait):
                    changed += self.dispatch(job).status != QUEUED
                continue
            try:
                after = self.reconcile_job(job)
            except SubmitterError as e:
                LOG.warning("reconcile: %s", e)
                break  # the cluster is down: try again next round
            changed += after.status != job.status
        return changed

    def reconcile_job(self, job: JobRecord) -> JobRecord:
        """Copy Ray's state of one submitted job into the store.

        Raises:
            SubmitterError: Ray cannot be reached.
        """
        if job.ray_job_id is None or job.final:
            return job
        try:
            state = self.submitter.state(job.ray_job_id)
        except UnknownJobError as e:
            return self._finish(job, FAILED, f"lost: {e} (was the cluster replaced?)")
        if state.status == job.status:
            return job
        if state.status == RUNNING:
            return self.store.update_job(job.id, [QUEUED, PENDING], status=RUNNING,
                                         started_at=job.started_at or self.clock()) or job
        if state.status in FINAL:
            return self._finish(job, state.status, state.message)
        return job

    def _finish(self, job: JobRecord, status: str, ray_message: str | None) -> JobRecord:
        values: dict[str, Any] = {"status": status, "finished_at": self.clock()}
        if job.started_at is None:
            values["started_at"] = values["finished_at"]
        if status == SUCCEEDED:
            try:
                values["result"] = summarize(job.output_dir)
            except ResultMissingError as e:
                values["error"] = f"succeeded, but its result cannot be read by the service: {e}"
        else:
            status_doc = read_status(job.output_dir) or {}
            reason = status_doc.get("error") or ray_message
            if status == STOPPED and job.error:
                reason = job.error
            values["error"] = " ".join(str(reason).split())[:2000] if reason else None
        done = self.store.update_job(job.id, sorted(ACTIVE), **values)
        if done is None:  # someone else finished it first
            return self.store.get_job(job.id) or job
        with contextlib.suppress(OSError):
            os.unlink(self.jobfile(job.id))  # the spec the job ran is in its spec.resolved.json
        LOG.info("job %s %s", job.id, status)
        if status == SUCCEEDED and done.schedule_id:
            self._record_drift(done)
        return done

    def _record_drift(self, job: JobRecord) -> None:
        run = self.store.run_of_job(job.id)
        if run is None or job.result is None:
            return
        prev = self.store.last_success_of_schedule(run.schedule_id, before_job=job.id)
        if prev is None or prev.result is None:
            drift: dict[str, Any] = {"format": DRIFT_FORMAT, "previous_job_id": None, "job_id": job.id,
                                     "note": "first successful run of the schedule: nothing to compare"}
        else:
            drift = compute_drift(prev.result, job.result, prev.id, job.id)
        self.store.set_run_drift(run.id, drift)

    # ------------------------------------------------------------------ reading

    def get(self, job_id: str) -> JobRecord:
        """A job.

        Raises:
            NotFoundError: No such job.
        """
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id!r} not found")
        return job
