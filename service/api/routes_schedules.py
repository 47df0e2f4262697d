"""``/v1/schedules``: create, list, show, pause, resume, delete, run now, history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, Security
from fastapi.responses import JSONResponse

from service.api.auth import bearer_scheme
from service.api.deps import Services, services
from service.api.routes_jobs import ID_PATTERN, REPLAYED, IdemKeyHeader, idempotency_key
from service.api.schemas import (
    ErrorOut,
    RefusedRunOut,
    RunList,
    RunOut,
    ScheduleCreate,
    ScheduleList,
    ScheduleOut,
)
from service.server.scheduler import REFUSED
from service.store.records import RunRecord

ScheduleId = Annotated[str, Path(pattern=ID_PATTERN, description="schedule id")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}

router = APIRouter(prefix="/v1/schedules", tags=["schedules"], dependencies=[Security(bearer_scheme)],
                   responses={401: {"model": ErrorOut, "description": "missing or invalid token"}})


def _run_out(svc: Services, run: RunRecord) -> RunOut:
    job = svc.store.get_job(run.job_id) if run.job_id else None
    return RunOut.of(run, job.status if job else None)


@router.post("", status_code=201, response_model=ScheduleOut,
             responses={200: {"model": ScheduleOut,
                              "description": "replayed: the schedule an earlier request with this "
                                             "Idempotency-Key created"},
                        400: {"model": ErrorOut, "description": "the body cannot be read (not UTF-8 JSON)"},
                        409: {"model": ErrorOut},
                        413: {"model": ErrorOut, "description": "the body is over the size limit"},
                        422: {"description": "bad cron line, time zone or spec, or an Idempotency-Key sent "
                                             "before with another request"}})
def create_schedule(body: ScheduleCreate, request: Request, response: Response,
                    svc: Annotated[Services, Depends(services)], key: IdemKeyHeader = None) -> Any:
    """Create a schedule: a five-field cron line read in an IANA time zone, and a job spec."""
    s, replayed = svc.scheduler.create_once(body.name, body.cron, body.timezone, body.spec,
                                            idempotency_key(request, key))
    if replayed:
        response.status_code = 200
        response.headers.update(REPLAYED)
    return ScheduleOut.of(s)


@router.get("", response_model=ScheduleList)
def list_schedules(svc: Annotated[Services, Depends(services)]) -> ScheduleList:
    """Every schedule, by name."""
    return ScheduleList(schedules=[ScheduleOut.of(s) for s in svc.store.list_schedules()])


@router.get("/{schedule_id}", response_model=ScheduleOut, responses=NOT_FOUND)
def get_schedule(schedule_id: ScheduleId, svc: Annotated[Services, Depends(services)]) -> ScheduleOut:
    """One schedule."""
    return ScheduleOut.of(svc.scheduler.get(schedule_id))


@router.post("/{schedule_id}/pause", response_model=ScheduleOut, responses=NOT_FOUND)
def pause_schedule(schedule_id: ScheduleId, svc: Annotated[Services, Depends(services)]) -> ScheduleOut:
    """Stop firing (``run now`` still works)."""
    return ScheduleOut.of(svc.scheduler.pause(schedule_id))


@router.post("/{schedule_id}/resume", response_model=ScheduleOut, responses=NOT_FOUND)
def resume_schedule(schedule_id: ScheduleId, svc: Annotated[Services, Depends(services)]) -> ScheduleOut:
    """Fire again from the next cron time after now (fires while paused are not caught up)."""
    return ScheduleOut.of(svc.scheduler.resume(schedule_id))


@router.delete("/{schedule_id}", status_code=204, responses=NOT_FOUND)
def delete_schedule(schedule_id: ScheduleId, svc: Annotated[Services, Depends(services)]) -> Response:
    """Delete a schedule and its run history (its jobs stay)."""
    svc.scheduler.delete(schedule_id)
    return Response(status_code=204)


@router.post("/{schedule_id}/run", status_code=201, response_model=RunOut,
             responses={**NOT_FOUND, 409: {"model": RunOut, "description": "skipped: a run is still going"},
                        422: {"model": RefusedRunOut, "description": "refused: the stored spec no longer "
                                                                     "passes validation (detail: why)"}})
def run_schedule(schedule_id: ScheduleId, svc: Annotated[Services, Depends(services)]) -> Any:
    """Fire now. If the previous run is still going, nothing starts: the skipped run is recorded and
    returned with status 409. The stored spec is validated again, as a submission is; if it is
    refused (e.g. a data folder now links out of the data roots), nothing starts: the refused run
    is recorded and returned with status 422 and the reason in ``detail``."""
    run = svc.scheduler.run_now(schedule_id)
    out = _run_out(svc, run)
    if run.job_id is None and (run.skip_reason or "").startswith(REFUSED):
        refused = RefusedRunOut(**out.model_dump(), detail=(run.skip_reason or "")[len(REFUSED):])
        return JSONResponse(status_code=422, content=refused.model_dump(mode="json"))
    if run.job_id is None:
        return JSONResponse(status_code=409, content=out.model_dump(mode="json"))
    return out


@router.get("/{schedule_id}/history", response_model=RunList, responses=NOT_FOUND)
def schedule_history(
    schedule_id: ScheduleId, svc: Annotated[Services, Depends(services)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> RunList:
    """Runs newest first: fire time, trigger, job (and its state) or skip reason, warm-start source, drift."""
    svc.scheduler.get(schedule_id)
    return RunList(runs=[_run_out(svc, r) for r in svc.store.runs(schedule_id, limit, offset)])
