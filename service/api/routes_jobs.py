"""``/v1/jobs``: submit, list, inspect, cancel, result."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, Security
from fastapi.responses import JSONResponse

from service.api.auth import bearer_scheme, bearer_token
from service.api.deps import Services, services
from service.api.errors import http_error
from service.api.schemas import NAME_PATTERN, ErrorOut, JobDetail, JobList, JobOut, JobResultOut, MlflowLink
from service.results.read import ResultMissingError, read_result
from service.results.status import read_status
from service.server.idempotency import HEADER, KEY_PATTERN, IdempotencyKey, principal_of
from service.store.records import SUCCEEDED, JobRecord
from service.tuning.spec import JobSpec

ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
JobId = Annotated[str, Path(pattern=ID_PATTERN, description="job id")]
#: The job states (service.store.records.STATES; a unit test keeps them equal).
Status = Literal["QUEUED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"]

#: The optional ``Idempotency-Key`` header of the creating routes.
IdemKeyHeader = Annotated[str | None, Header(
    alias=HEADER, pattern=KEY_PATTERN,
    description="optional: a fresh key per request (1-200 visible ASCII characters); the same request "
                "sent again with the same key answers what the first one created (200) instead of "
                "creating it again; the same key with another request is refused (422)")]
#: The headers of a replayed answer.
REPLAYED = {"Idempotent-Replayed": "true"}


def idempotency_key(request: Request, key: str | None) -> IdempotencyKey | None:
    """The request's key, scoped by its token (None without a key)."""
    if key is None:
        return None
    return IdempotencyKey(principal_of(bearer_token(request.headers.get("authorization"))), key)


router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Security(bearer_scheme)],
                   responses={401: {"model": ErrorOut, "description": "missing or invalid token"}})


def detail(job: JobRecord) -> JobDetail:
    """A job with what its ``status.json`` and result summary say."""
    status: dict[str, Any] = read_status(job.output_dir) or {}
    result = job.result or {}
    mlflow = status.get("mlflow") or result.get("mlflow")
    return JobDetail(
        **JobOut.of(job).model_dump(), spec=job.spec, phase=status.get("state"),
        progress=status.get("strategies") or {},
        best_tuning_f=status.get("best_tuning_f"),
        best_heldout_f=result.get("heldout_f", status.get("heldout_f")),
        recommended=result.get("recommended", status.get("recommended")),
        mlflow=MlflowLink(**{k: mlflow.get(k) for k in MlflowLink.model_fields}) if mlflow else None,
        tracking=status.get("tracking") or result.get("tracking"), result=job.result,
    )


@router.post("", status_code=201, response_model=JobDetail,
             responses={200: {"model": JobDetail, "description": "replayed: the job an earlier request with "
                                                                 "this Idempotency-Key created"},
                        400: {"model": ErrorOut, "description": "the body cannot be read (not UTF-8 JSON)"},
                        413: {"model": ErrorOut, "description": "the body is over the size limit"},
                        422: {"description": "invalid spec (field paths in detail[].field), or an "
                                             "Idempotency-Key sent before with another spec"}})
def submit_job(spec: JobSpec, request: Request, response: Response,
               svc: Annotated[Services, Depends(services)], key: IdemKeyHeader = None) -> Any:
    """Validate a job spec (same schema as the YAML/JSON spec files), store it and run it on Ray.

    The Ray entrypoint is built by sedtune from the validated spec. A job whose submission Ray
    could not take stays ``QUEUED`` and is submitted again by the reconciler.
    """
    idem = idempotency_key(request, key)
    if idem is None:
        return detail(svc.jobs.submit(spec))
    job, replayed = svc.jobs.submit_once(spec, idem)
    if replayed:
        response.status_code = 200
        response.headers.update(REPLAYED)
    return detail(job)


@router.get("", response_model=JobList)
def list_jobs(
    svc: Annotated[Services, Depends(services)],
    status: Annotated[Status | None, Query(description="only jobs in this state")] = None,
    name: Annotated[str | None, Query(pattern=NAME_PATTERN, description="only jobs of this name")] = None,
    schedule: Annotated[str | None, Query(pattern=ID_PATTERN, description="of this schedule")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobList:
    """Jobs, newest first."""
    jobs = svc.store.list_jobs(status, name, schedule, limit, offset)
    return JobList(jobs=[JobOut.of(j) for j in jobs], count=len(jobs))


@router.get("/{job_id}", response_model=JobDetail, responses={404: {"model": ErrorOut}})
def get_job(job_id: JobId, svc: Annotated[Services, Depends(services)]) -> JobDetail:
    """Status, progress per strategy, best F1 so far, Ray job id, MLflow run link."""
    return detail(svc.jobs.get(job_id))


@router.post("/{job_id}/cancel", response_model=JobDetail,
             responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}, 503: {"model": ErrorOut}})
def cancel_job(job_id: JobId, svc: Annotated[Services, Depends(services)]) -> JobDetail:
    """Cancel an unfinished job (``STOPPED`` once Ray has stopped it)."""
    return detail(svc.jobs.cancel(job_id))


@router.get("/{job_id}/result", response_model=JobResultOut,
            responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}})
def get_result(job_id: JobId, svc: Annotated[Services, Depends(services)]) -> Any:
    """The comparison table and every parameter file of a successful job."""
    job = svc.jobs.get(job_id)
    if job.status != SUCCEEDED:
        return JSONResponse(status_code=409, content={
            "detail": f"job {job_id} is {job.status}; results exist only for SUCCEEDED jobs"})
    try:
        res = read_result(job.output_dir)
    except ResultMissingError as e:
        raise http_error(404, f"job {job_id}: result files are not readable: {e}") from None
    return JobResultOut(job_id=job.id, **res)
