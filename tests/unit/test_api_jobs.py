"""The jobs API on a fake cluster: submit, list, inspect, cancel, result, reconcile, refusals."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from service.api.routes_jobs import Status
from service.store.records import STATES
from tests.unit.api_support import (
    AUTH,
    Api,
    api_fixture,  # noqa: F401  (the `api` fixture)
    make_api,
    write_fake_result,
)


def _submit(api: Api, **over) -> dict:
    r = api.client.post("/v1/jobs", json=api.spec(**over), headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()


def test_submit_stores_and_submits_with_a_built_entrypoint(api: Api) -> None:
    job = _submit(api)
    assert job["status"] == "PENDING" and job["ray_job_id"] == job["id"]
    assert job["output_dir"] == str(api.root / "out" / "unit" / job["id"])
    (sid, _, env, meta), = api.submitter.submitted
    assert sid == job["id"] and env == {"SEDTUNE_JOB_ID": job["id"]} and meta["name"] == "unit"
    argv = api.entrypoint(job["id"])
    # the spec travels in a job file under the service's own folder, not on the command line
    path = str(api.root / "out" / ".sedtune" / "jobs" / f"{job['id']}.json")
    assert argv == ["python", "-m", "service.jobrun", "--job-id", job["id"], "--spec-file", path,
                    "--spec-sha256", hashlib.sha256(Path(path).read_bytes()).hexdigest()]
    doc = api.job_file(job["id"])
    assert doc["format"] == "sedtune.jobfile/1" and doc["job_id"] == job["id"]
    assert doc["confinement"]["data_roots"] == [str(api.root / "data")]
    assert doc["confinement"]["output_roots"] == [str(api.root / "out")]
    sent = doc["spec"]
    # the effective spec: own output dir, the service's tracking, validated defaults filled in
    assert sent["output"] == job["output_dir"]
    assert sent["tracking"]["uri"] == "http://mlflow.test:5000"
    assert sent["resources"]["address"] is None
    assert sent["data"] == api.spec()["data"] | {"classes": None}
    # the job file goes when the job ends
    api.submitter.set(job["id"], "FAILED", "x")
    api.svc.jobs.reconcile_once()
    assert not os.path.exists(path)


def test_inspect_list_and_filters(api: Api) -> None:
    a = _submit(api)
    api.clock.advance(1)
    b = _submit(api, name="other")
    api.submitter.set(a["id"], "RUNNING")
    api.svc.jobs.reconcile_once()
    got = api.client.get(f"/v1/jobs/{a['id']}", headers=AUTH).json()
    assert got["status"] == "RUNNING" and got["started_at"] is not None and got["ray_job_id"] == a["id"]
    ids = lambda **q: [j["id"] for j in api.client.get("/v1/jobs", params=q, headers=AUTH).json()["jobs"]]  # noqa: E731
    assert ids() == [b["id"], a["id"]]
    assert ids(status="RUNNING") == [a["id"]]
    assert ids(name="other") == [b["id"]]
    assert ids(status="SUCCEEDED") == []
    assert api.client.get("/v1/jobs", params={"status": "NOPE"}, headers=AUTH).status_code == 422
    assert api.client.get("/v1/jobs/j-missing", headers=AUTH).status_code == 404


def test_progress_best_f_and_mlflow_link_while_running_and_after(api: Api) -> None:
    job = _submit(api)
    out = job["output_dir"]
    from service.results.status import ProgressFile

    pf = ProgressFile(out, job["id"], [("manual", None), ("exact", 30.0), ("bayes", 4.0)])
    pf.set(state="running")
    pf.strategy_done("manual", 0.41)
    tick = pf.factory("exact (split 1/1)", 30.0)
    pf.min_interval_s = 0.0
    tick(15.0)
    api.submitter.set(job["id"], "RUNNING")
    api.svc.jobs.reconcile_once()
    d = api.client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()
    assert d["phase"] == "running" and d["best_tuning_f"] == 0.41
    assert d["progress"]["manual"]["state"] == "done"
    assert d["progress"]["exact"] == {"state": "running", "split": "1/1", "evaluations": 15.0, "budget": 30.0,
                                      "fraction": 0.5, "best_tuning_f": None}
    assert d["progress"]["bayes"]["state"] == "pending"
    assert api.client.get(f"/v1/jobs/{job['id']}/result", headers=AUTH).status_code == 409

    write_fake_result(out, job["id"], 0.4, 0.55)
    api.submitter.set(job["id"], "SUCCEEDED")
    api.svc.jobs.reconcile_once()
    d = api.client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()
    assert d["status"] == "SUCCEEDED" and d["finished_at"] and d["best_heldout_f"] == 0.55
    assert d["recommended"] == "bayes/robust"
    assert d["mlflow"]["run_id"] == f"run-{job['id']}" and d["mlflow"]["url"].startswith("http://mlflow.test")
    assert d["result"]["best_params"]["Dog"]["threshold"] == 0.4
    res = api.client.get(f"/v1/jobs/{job['id']}/result", headers=AUTH).json()
    assert res["comparison"]["recommended"] == "bayes/robust"
    assert set(res["params"]) == {"bayes.robust"}
    assert res["best_params"]["format"] == "sedtune.params/1"


def test_failed_job_keeps_the_reason(api: Api) -> None:
    job = _submit(api)
    api.submitter.set(job["id"], "FAILED", "Job entrypoint command failed with exit code 1")
    api.svc.jobs.reconcile_once()
    d = api.client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()
    assert d["status"] == "FAILED" and "exit code 1" in d["error"]
    assert api.client.get(f"/v1/jobs/{job['id']}/result", headers=AUTH).status_code == 409


def test_cancel(api: Api) -> None:
    job = _submit(api)
    r = api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "STOPPED"
    assert api.submitter.stopped == [job["id"]]
    assert r.json()["error"] == "cancelled by request"
    r = api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH)
    assert r.status_code == 409 and "already finished" in r.json()["detail"]
    assert api.client.post("/v1/jobs/j-none/cancel", headers=AUTH).status_code == 404


def test_ray_down_keeps_the_job_queued_and_the_reconciler_submits_it_later(api: Api) -> None:
    api.submitter.down = True
    job = _submit(api)
    assert job["status"] == "QUEUED" and "waiting for Ray" in job["error"]
    assert api.client.get("/ready", headers=AUTH).status_code == 503
    api.submitter.down = False
    api.svc.jobs.reconcile_once()  # too early: resubmit_after_s not passed
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()["status"] == "QUEUED"
    api.clock.advance(60)
    api.svc.jobs._attempts.clear()
    api.svc.jobs.reconcile_once()
    d = api.client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()
    assert d["status"] == "PENDING" and d["error"] is None
    assert len(api.submitter.submitted) == 1


def test_cancel_while_submitting_stops_the_ray_job_too(api: Api) -> None:
    job = api.svc.jobs.new_job(_spec_model(api))
    api.store.add_job(job)

    def cancel_meanwhile(submission_id: str, entrypoint: str) -> None:
        api.svc.jobs.cancel(submission_id)

    api.submitter.on_submit = cancel_meanwhile
    after = api.svc.jobs.dispatch(job)
    assert after.status == "STOPPED" and api.submitter.stopped == [job.id]
    assert api.submitter.jobs[job.id].status == "STOPPED"


def test_a_queued_job_that_ray_already_has_is_not_run_twice(api: Api) -> None:
    # the service died after Ray accepted the job but before it recorded that
    job = api.svc.jobs.new_job(_spec_model(api))
    api.store.add_job(job)
    api.submitter.submit(job.id, "x", {}, {})
    api.clock.advance(60)
    api.svc.jobs.reconcile_once()
    assert api.store.get_job(job.id).status == "PENDING"
    assert len(api.submitter.submitted) == 1


def _spec_model(api: Api):
    from service.tuning.spec import parse_spec

    return parse_spec(api.spec())


def test_restart_loses_nothing_and_reconciles(api: Api) -> None:
    job = _submit(api)
    api.submitter.set(job["id"], "RUNNING")
    again = api.reopen()
    assert again.client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()["status"] == "PENDING"
    write_fake_result(job["output_dir"], job["id"], 0.4, 0.5)
    again.submitter.set(job["id"], "SUCCEEDED")
    again.svc.jobs.reconcile_once()
    assert again.client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()["status"] == "SUCCEEDED"


def test_unknown_to_ray_fails_with_the_reason(api: Api) -> None:
    job = _submit(api)
    del api.submitter.jobs[job["id"]]
    api.svc.jobs.reconcile_once()
    d = api.store.get_job(job["id"])
    assert d.status == "FAILED" and "does not know" in d.error


def test_states_and_the_api_literal_agree() -> None:
    assert set(Status.__args__) == set(STATES)


# ---------------------------------------------------------------------- refusals (nothing stored)

def _refused(api: Api, body, field: str, text: str) -> None:
    before = len(api.store.list_jobs())
    sent = len(api.submitter.submitted)
    if isinstance(body, bytes):
        r = api.client.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"})
    else:
        r = api.client.post("/v1/jobs", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    fields = [d["field"] for d in r.json()["detail"]]
    assert field in fields, (fields, r.json())
    assert text in r.json()["message"], r.json()["message"]
    assert len(api.store.list_jobs()) == before and len(api.submitter.submitted) == sent


def test_non_finite_numbers_are_refused(api: Api) -> None:
    # JSON reads 1e400 as infinity; it must not reach the store or a job
    body = json.dumps(api.spec()).replace('"budget": 30', '"budget": 1e400').encode()
    _refused(api, body, "strategies[1].budget", "finite")
    body = json.dumps(api.spec()).replace('"budget": 30', '"budget": NaN').encode()
    r = api.client.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and not api.store.list_jobs()


@pytest.mark.parametrize(("over", "field", "text"), [
    ({"name": "bad name!"}, "name", "should match pattern"),
    ({"strategies": []}, "strategies", "at least 1"),
    ({"strategies": [{"name": "genetic"}]}, "strategies[0].name", "Input should be"),
    ({"strategies": [{"name": "exact", "budget": -1}]}, "strategies[0].budget", "greater than 0"),
    ({"space": {"kernels": [2]}}, "space.kernels", "odd integer"),
    ({"heldout": {"fraction": 1.5}}, "heldout.fraction", "less than 1"),
    ({"surprise": 1}, "surprise", "Extra inputs"),
    ({"strategies": [{"name": "bayes", "options": {"n_startup_trials": -3}}]},
     "strategies[0].options.n_startup_trials", "greater than or equal to 0"),
    ({"strategies": [{"name": "random", "options": {"nope": 1}}]}, "strategies[0].options.nope",
     "Extra inputs"),
])
def test_bad_specs_get_422_with_field_paths(api: Api, over, field, text) -> None:
    _refused(api, api.spec(**over), field, text)


def test_missing_required_fields(api: Api) -> None:
    _refused(api, {"name": "x"}, "data", "Field required")
    _refused(api, [1, 2], "body", "valid dictionary")


def test_malformed_json(api: Api) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    r = api.client.post("/v1/jobs", content=b"{not json", headers=headers)
    assert r.status_code == 422 and not api.store.list_jobs()


@pytest.mark.parametrize(("mutate", "field", "text"), [
    (lambda s, r: s["data"].update(scores="/etc"), "data.scores", "outside the allowed data roots"),
    (lambda s, r: s["data"].update(ground_truth="/etc/passwd"), "data.ground_truth", "outside"),
    (lambda s, r: s["data"].update(durations=str(r / "data" / ".." / "secret.tsv")), "data.durations",
     "outside"),
    (lambda s, r: s["data"].update(scores="relative/scores"), "data.scores", "must be absolute"),
    (lambda s, r: s["data"].update(scores="http://evil.example/x"), "data.scores",
     "scheme 'http' is not allowed"),
    (lambda s, r: s["data"].update(scores="file:///etc"), "data.scores", "outside"),
    (lambda s, r: s.update(heldout={"data": {"scores": "/root", "ground_truth": str(r / "data" / "g.tsv")}}),
     "heldout.data.scores", "outside"),
    (lambda s, r: s.update(output="/tmp/elsewhere"), "output", "outside the allowed output roots"),
    (lambda s, r: s.update(output="s3://bucket/out"), "output", "local absolute path"),
    (lambda s, r: s.update(strategies=[{"name": "bayes", "options": {"warm_start": "/etc/params.json"}}]),
     "strategies[0].options.warm_start", "outside"),
    (lambda s, r: s.update(strategies=[{"name": "random",
                                        "options": {"fault_marker": str(r / "out" / "m")}}]),
     "strategies[0].options.fault_marker", "test-only"),
    (lambda s, r: s.update(tracking={"uri": "sqlite:////tmp/anywhere.db"}), "tracking.uri",
     "must be omitted"),
])
def test_paths_outside_the_roots_are_refused(api: Api, mutate, field, text) -> None:
    spec = api.spec()
    mutate(spec, api.root)
    _refused(api, spec, field, text)


def test_symlink_out_of_the_data_root_is_refused(api: Api) -> None:
    link = api.root / "data" / "escape"
    link.symlink_to("/etc")
    spec = api.spec()
    spec["data"]["ground_truth"] = str(link / "passwd")
    _refused(api, spec, "data.ground_truth", "outside")


def test_allowed_uri_schemes_and_roots_pass(api: Api) -> None:
    spec = api.spec()
    spec["data"]["scores"] = "s3://bucket/scores"
    spec["output"] = str(api.root / "out" / "nightly")
    spec["strategies"] = [{"name": "bayes", "options": {"warm_start": str(api.root / "out" / "x.json")}}]
    r = api.client.post("/v1/jobs", json=spec, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["output_dir"].startswith(str(api.root / "out" / "nightly" / "j-"))


def test_data_is_checked_when_configured(tmp_path) -> None:
    from envs.synth import generate
    from envs.synth_config import SynthConfig

    generate(str(tmp_path / "data" / "set"), SynthConfig(n_clips=12, n_classes=2, seed=0))
    api = make_api(tmp_path)
    api = make_api(tmp_path, replace(api.settings, check_data=True))
    assert api.client.post("/v1/jobs", json=api.spec(), headers=AUTH).status_code == 201
    spec = api.spec()
    spec["data"]["ground_truth"] = str(tmp_path / "data" / "missing.tsv")
    _refused(api, spec, "data.ground_truth", "missing.tsv")
    spec = api.spec(data={**api.spec()["data"], "classes": ["Unicorn"]})
    _refused(api, spec, "data.classes[0]", "unknown class 'Unicorn'")
