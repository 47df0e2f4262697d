"""Request and response models of the HTTP API (published in the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.store.records import JobRecord, RunRecord, ScheduleRecord
from service.tuning.spec import JobSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class JobOut(BaseModel):
    """A job as listed."""

    id: str
    name: str
    status: str = Field(description="QUEUED, PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED")
    ray_job_id: str | None
    output_dir: str
    schedule_id: str | None
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @classmethod
    def of(cls, job: JobRecord) -> JobOut:
        """From a store record."""
        return cls(**{k: getattr(job, k) for k in cls.model_fields})


class StrategyProgress(BaseModel):
    """Progress of one strategy (from the job's ``status.json``)."""

    model_config = ConfigDict(extra="allow")

    state: str | None = None
    split: str | None = None
    evaluations: float | None = None
    budget: float | None = None
    fraction: float | None = Field(default=None, description="evaluations / budget, 0..1")
    best_tuning_f: float | None = None


class MlflowLink(BaseModel):
    """Where the job's runs are in MLflow."""

    uri: str | None = None
    experiment: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None
    url: str | None = Field(default=None, description="the parent run's page (HTTP tracking servers)")


class JobDetail(JobOut):
    """A job with its spec, progress, best F1 so far and MLflow link."""

    spec: dict[str, Any]
    phase: str | None = Field(default=None, description="the job's own state from status.json")
    progress: dict[str, StrategyProgress] = Field(default_factory=dict)
    best_tuning_f: float | None = Field(default=None, description="best tuning macro F1 so far")
    best_heldout_f: float | None = Field(default=None, description="held-out macro F1 of the recommendation")
    recommended: str | None = None
    mlflow: MlflowLink | None = None
    tracking: str | None = Field(default=None, description="the tracking line (or why tracking failed)")
    result: dict[str, Any] | None = Field(default=None, description="summary of a successful result")


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[JobOut]
    count: int


class JobResultOut(BaseModel):
    """A successful job's results: the comparison table and every parameter file."""

    job_id: str
    output_dir: str
    comparison: dict[str, Any]
    params: dict[str, Any] = Field(description="'<strategy>.<selection>' -> sedtune.params/2 file")
    best_params: dict[str, Any] | None


class ScheduleCreate(BaseModel):
    """A new schedule."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    cron: str = Field(min_length=1, max_length=200, description="five-field cron line, e.g. '30 2 * * *'")
    timezone: str = Field(default="UTC", min_length=1, max_length=64, description="IANA time zone")
    spec: JobSpec


class ScheduleOut(BaseModel):
    """A schedule."""

    id: str
    name: str
    cron: str
    timezone: str
    paused: bool
    created_at: datetime
    last_run_at: datetime | None
    next_run_at: datetime | None
    spec: dict[str, Any]

    @classmethod
    def of(cls, s: ScheduleRecord) -> ScheduleOut:
        """From a store record."""
        return cls(**{k: getattr(s, k) for k in cls.model_fields})


class ScheduleList(BaseModel):
    """Every schedule."""

    schedules: list[ScheduleOut]


class RunOut(BaseModel):
    """One fire of a schedule."""

    id: int
    schedule_id: str
    fire_time: datetime
    trigger: str = Field(description="cron, manual (run now) or missed (catch-up after downtime)")
    job_id: str | None
    job_status: str | None = None
    skip_reason: str | None
    warm_start: dict[str, Any] | None
    drift: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, r: RunRecord, job_status: str | None = None) -> RunOut:
        """From a store record."""
        return cls(job_status=job_status, **{k: getattr(r, k) for k in cls.model_fields if k != "job_status"})


class RefusedRunOut(RunOut):
    """A fire whose spec was refused: the run recorded, and why in one line."""

    detail: str = Field(description="the field path and the rule the stored spec now breaks")


class RunList(BaseModel):
    """A schedule's runs, newest first."""

    runs: list[RunOut]


class ErrorOut(BaseModel):
    """An error: one line."""

    detail: str
