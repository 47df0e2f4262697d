"""The schedules API on a fake cluster and a fake clock: cron fires, overlap, warm start, drift,
missed runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.unit.api_support import (
    AUTH,
    Api,
    api_fixture,  # noqa: F401  (the `api` fixture)
    write_fake_result,
)


def _create(api: Api, cron: str = "* * * * *", tz: str = "UTC", name: str = "nightly", **spec_over) -> dict:
    r = api.client.post("/v1/schedules", json={"name": name, "cron": cron, "timezone": tz,
                                               "spec": api.spec(**spec_over)}, headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()


def _history(api: Api, sid: str) -> list[dict]:
    r = api.client.get(f"/v1/schedules/{sid}/history", headers=AUTH)
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["runs"]))  # oldest first


def _succeed(api: Api, job_id: str, threshold: float, heldout_f: float) -> None:
    job = api.store.get_job(job_id)
    write_fake_result(job.output_dir, job_id, threshold, heldout_f)
    api.submitter.set(job_id, "SUCCEEDED")
    api.svc.jobs.reconcile_once()


def test_cron_fires_twice_second_run_warm_started_with_drift_and_overlap_skipped(api: Api) -> None:
    s = _create(api)  # clock: 12:00:30 UTC
    assert s["next_run_at"] == "2026-01-05T12:01:00Z"
    api.clock.advance(25)
    assert api.svc.scheduler.tick() == []
    api.clock.advance(10)  # 12:01:05
    (run1,) = api.svc.scheduler.tick()
    assert run1.trigger == "cron" and run1.job_id and run1.warm_start is None
    api.submitter.set(run1.job_id, "RUNNING")
    api.svc.jobs.reconcile_once()

    api.clock.advance(60)  # 12:02:05: run 1 still going -> skipped and recorded
    (skip,) = api.svc.scheduler.tick()
    assert skip.job_id is None
    assert skip.skip_reason.startswith(f"overlap: the previous run's job {run1.job_id}")
    _succeed(api, run1.job_id, 0.40, 0.50)

    api.clock.advance(60)  # 12:03:05
    (run2,) = api.svc.scheduler.tick()
    first_params = api.store.get_job(run1.job_id).output_dir + "/best_params.json"
    assert run2.warm_start == {"job_id": run1.job_id, "params_path": first_params, "applied_to": ["bayes"]}
    bayes = next(st for st in api.sent_spec(run2.job_id)["strategies"] if st["name"] == "bayes")
    assert bayes["options"]["warm_start"] == first_params
    _succeed(api, run2.job_id, 0.45, 0.55)

    runs = _history(api, s["id"])
    assert [r["trigger"] for r in runs] == ["cron", "cron", "cron"]
    assert [r["job_status"] for r in runs] == ["SUCCEEDED", None, "SUCCEEDED"]
    assert runs[0]["drift"]["previous_job_id"] is None and "first successful run" in runs[0]["drift"]["note"]
    drift = runs[2]["drift"]
    assert drift["format"] == "sedtune.drift/1" and drift["previous_job_id"] == run1.job_id
    assert drift["heldout_f"] == {"previous": 0.5, "current": 0.55, "delta": 0.05}
    assert drift["changed_classes"] == ["Dog"] and drift["max_abs_threshold_delta"] == 0.05
    assert drift["classes"]["Dog"]["threshold"] == {"previous": 0.4, "current": 0.45, "delta": 0.05}
    assert drift["classes"]["Cat"]["median_filter_frames"]["delta"] == 0
    jobs = api.client.get("/v1/jobs", params={"schedule": s["id"]}, headers=AUTH).json()["jobs"]
    assert {j["id"] for j in jobs} == {run1.job_id, run2.job_id}
    sched = api.client.get(f"/v1/schedules/{s['id']}", headers=AUTH).json()
    assert sched["last_run_at"] == "2026-01-05T12:03:00Z" and sched["next_run_at"] == "2026-01-05T12:04:00Z"


def test_run_now_and_overlap_409(api: Api) -> None:
    s = _create(api, cron="0 3 * * *")
    r = api.client.post(f"/v1/schedules/{s['id']}/run", headers=AUTH)
    assert r.status_code == 201 and r.json()["trigger"] == "manual" and r.json()["job_status"] == "PENDING"
    r2 = api.client.post(f"/v1/schedules/{s['id']}/run", headers=AUTH)
    assert r2.status_code == 409 and r2.json()["skip_reason"].startswith("overlap")
    assert len(api.submitter.submitted) == 1
    assert [x["job_id"] is None for x in _history(api, s["id"])] == [False, True]


def test_missed_fires_after_downtime_run_once(api: Api) -> None:
    s = _create(api)  # next fire 12:01
    api.clock.advance(10 * 60)  # the service was down until 12:10:30
    again = api.reopen()
    runs = again.svc.scheduler.tick()
    assert len(runs) == 10
    assert all(r.skip_reason.startswith("missed:") for r in runs[:9])
    assert runs[-1].trigger == "missed" and runs[-1].job_id is not None
    assert runs[-1].fire_time == datetime(2026, 1, 5, 12, 10, tzinfo=UTC)
    assert len(again.submitter.submitted) == 1
    got = again.client.get(f"/v1/schedules/{s['id']}", headers=AUTH).json()
    assert got["next_run_at"] == "2026-01-05T12:11:00Z"


def test_long_downtime_records_a_bounded_number_of_misses(api: Api) -> None:
    _create(api)
    api.clock.advance(3 * 24 * 3600)
    runs = api.svc.scheduler.tick()
    from service.server.scheduler import MAX_MISSED_RECORDS

    assert len(runs) == MAX_MISSED_RECORDS + 2 and "not recorded one by one" in runs[-2].skip_reason


def test_pause_resume_delete(api: Api) -> None:
    s = _create(api)
    r = api.client.post(f"/v1/schedules/{s['id']}/pause", headers=AUTH).json()
    assert r["paused"] and r["next_run_at"] is None
    api.clock.advance(600)
    assert api.svc.scheduler.tick() == []
    r = api.client.post(f"/v1/schedules/{s['id']}/resume", headers=AUTH).json()
    assert not r["paused"] and r["next_run_at"] == "2026-01-05T12:11:00Z"
    run = api.client.post(f"/v1/schedules/{s['id']}/run", headers=AUTH).json()
    assert api.client.delete(f"/v1/schedules/{s['id']}", headers=AUTH).status_code == 204
    assert api.client.get(f"/v1/schedules/{s['id']}", headers=AUTH).status_code == 404
    assert api.client.get(f"/v1/schedules/{s['id']}/history", headers=AUTH).status_code == 404
    assert api.client.delete(f"/v1/schedules/{s['id']}", headers=AUTH).status_code == 404
    assert api.client.get(f"/v1/jobs/{run['job_id']}", headers=AUTH).status_code == 200  # jobs stay
    for action in ("pause", "resume", "run"):
        assert api.client.post(f"/v1/schedules/s-none/{action}", headers=AUTH).status_code == 404


def test_time_zone_and_list(api: Api) -> None:
    s = _create(api, cron="30 2 * * *", tz="Europe/Paris")
    assert s["next_run_at"] == "2026-01-06T01:30:00Z"  # 02:30 CET = 01:30 UTC
    _create(api, cron="0 4 * * 1-5", tz="America/New_York", name="weekdays")
    names = [x["name"] for x in api.client.get("/v1/schedules", headers=AUTH).json()["schedules"]]
    assert names == ["nightly", "weekdays"]


def test_duplicate_name_409(api: Api) -> None:
    _create(api)
    r = api.client.post("/v1/schedules", json={"name": "nightly", "cron": "* * * * *", "spec": api.spec()},
                        headers=AUTH)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]


@pytest.mark.parametrize(("body", "field", "text"), [
    ({"cron": "* * * *"}, "cron", "5 fields"),
    ({"cron": "61 * * * *"}, "cron", "not a valid cron line"),
    ({"cron": "every night"}, "cron", "5 fields"),
    ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
    ({"cron": "* * * * * *"}, "cron", "5 fields"),
    ({"cron": ""}, "cron", "at least 1 character"),
    ({"timezone": "Mars/Olympus"}, "timezone", "unknown IANA time zone"),
    ({"name": "no spaces"}, "name", "pattern"),
    ({"spec": {"name": "x"}}, "spec.data", "Field required"),
    ({"spec": "SPEC"}, "spec", "valid dictionary"),
])
def test_refused_schedules_store_nothing(api: Api, body, field, text) -> None:
    full = {"name": "n1", "cron": "0 3 * * *", "timezone": "UTC", "spec": api.spec()} | body
    r = api.client.post("/v1/schedules", json=full, headers=AUTH)
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["detail"]], r.json()
    assert text in r.json()["message"]
    assert api.store.list_schedules() == [] and api.store.list_jobs() == []


def test_schedule_spec_paths_are_checked(api: Api) -> None:
    spec = api.spec()
    spec["data"]["scores"] = "/etc"
    r = api.client.post("/v1/schedules", json={"name": "n1", "cron": "0 3 * * *", "spec": spec}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "spec.data.scores"
    assert r.json()["detail"][0]["loc"] == ["body", "spec", "data", "scores"]
    assert api.store.list_schedules() == []


def test_restart_keeps_schedules_and_history(api: Api) -> None:
    s = _create(api)
    api.client.post(f"/v1/schedules/{s['id']}/run", headers=AUTH)
    again = api.reopen()
    assert [x["id"] for x in again.client.get("/v1/schedules", headers=AUTH).json()["schedules"]] == [s["id"]]
    assert len(_history(again, s["id"])) == 1


def test_warm_start_without_bayes_or_file_is_recorded(api: Api) -> None:
    s = _create(api, strategies=[{"name": "manual"}, {"name": "exact", "budget": 30}])
    run = api.client.post(f"/v1/schedules/{s['id']}/run", headers=AUTH).json()
    _succeed(api, run["job_id"], 0.4, 0.5)
    run2 = api.client.post(f"/v1/schedules/{s['id']}/run", headers=AUTH).json()
    assert run2["warm_start"]["job_id"] == run["job_id"] and run2["warm_start"]["applied_to"] == []
    assert "no bayes strategy" in run2["warm_start"]["note"]
