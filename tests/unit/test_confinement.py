"""Confinement where the data is opened (issue 14): real symlinks swapped in after submission are
caught when a schedule fires, when a stored job is handed to Ray (also after a restart), and by
the job process itself (a real ``python -m service.jobrun`` run on the entrypoint the service
built)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.results.status import read_status
from service.server.confine import Confinement, confine_spec, resolve_under
from service.server.policy import FieldError
from service.tuning.spec import parse_spec
from tests.unit.api_support import (
    AUTH,
    Api,
    api_fixture,  # noqa: F401  (the `api` fixture)
)

ROOT = Path(__file__).resolve().parents[2]


def _swap_for_link(folder: Path, target: Path) -> None:
    """Replace ``folder`` by a symlink to ``target`` (the original is kept aside)."""
    folder.rename(folder.with_name(folder.name + ".orig"))
    folder.symlink_to(target, target_is_directory=True)


def _outside(api: Api) -> Path:
    """A folder outside every root, holding what a data set would."""
    out = api.root / "outside" / "set"
    (out / "scores").mkdir(parents=True)
    (out / "ground_truth.tsv").write_text("filename\tonset\toffset\tevent_label\nsecret.wav\t0\t1\tSecret\n")
    return out


# ---------------------------------------------------------------------- the check itself


def test_symlinks_leaving_the_root_at_any_level_are_refused(tmp_path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "set" / "scores").mkdir(parents=True)
    (outside / "x").mkdir(parents=True)
    roots = (str(root),)
    scores = str(root / "set" / "scores")
    assert resolve_under(scores, "data.scores", roots, "data") == scores
    # a link inside the root is followed, and the resolved path is what the caller goes on with
    (root / "alias").symlink_to(root / "set")
    assert resolve_under(str(root / "alias" / "scores"), "f", roots, "data") == scores
    # a link out of the root at the last level, in the middle, or out and back in
    (root / "out").symlink_to(outside)
    (outside / "back").symlink_to(root / "set")
    for path in (root / "out", root / "out" / "x", root / "out" / "back" / "scores"):
        with pytest.raises(FieldError, match=r"passes outside the allowed data roots .* resolves to") as e:
            resolve_under(str(path), "data.scores", roots, "data")
        assert e.value.field == "data.scores"
    # a folder whose entry (a shard) links outside
    (outside / "secret.parquet").write_bytes(b"PAR1")
    (root / "set" / "scores" / "a.parquet").symlink_to(outside / "secret.parquet")
    with pytest.raises(FieldError, match=r"holds 'a\.parquet', a symlink to .* outside the allowed data"):
        resolve_under(str(root / "set" / "scores"), "data.scores", roots, "data")
    with pytest.raises(FieldError, match="must be absolute"):
        resolve_under("set/scores", "data.scores", roots, "data")


def test_the_services_own_files_are_refused(tmp_path) -> None:
    out = tmp_path / "out"
    (out / ".sedtune").mkdir(parents=True)
    conf = Confinement((str(out),), (str(out),), (), (str(out / ".sedtune"),))
    spec = parse_spec({"name": "x", "data": {"scores": str(out / "s"), "ground_truth": str(out / "g.tsv")},
                       "strategies": [{"name": "manual"}], "output": str(out / ".sedtune" / "jobs")})
    with pytest.raises(FieldError, match="service's own") as e:
        confine_spec(spec, conf)
    assert e.value.field == "output"


# ---------------------------------------------------------------------- schedules


def test_a_schedule_fire_after_its_data_folder_became_a_link_out_is_refused(api: Api) -> None:
    r = api.client.post("/v1/schedules", json={"name": "nightly", "cron": "* * * * *", "spec": api.spec()},
                        headers=AUTH)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    _swap_for_link(api.root / "data" / "set", _outside(api))

    # the same spec submitted directly: 422, nothing stored
    r = api.client.post("/v1/jobs", json=api.spec(), headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "data.scores", r.text
    # run now: nothing starts; the refused run is recorded with its one-line reason
    r = api.client.post(f"/v1/schedules/{sid}/run", headers=AUTH)
    assert r.status_code == 422, r.text
    assert r.json()["job_id"] is None and r.json()["detail"].startswith("data.scores: ")
    assert "outside the allowed data roots" in r.json()["detail"] and "\n" not in r.json()["detail"]
    # the cron fire too
    api.clock.advance(60)
    (run,) = api.svc.scheduler.tick()
    assert run.job_id is None and run.skip_reason.startswith("refused: data.scores: ")
    history = api.client.get(f"/v1/schedules/{sid}/history", headers=AUTH).json()["runs"]
    assert [h["job_id"] for h in history] == [None, None]
    assert all(h["skip_reason"].startswith("refused: data.scores:") for h in history)
    assert api.store.list_jobs() == [] and api.submitter.submitted == []

    # a restarted service (a new app over the same store) refuses as well
    again = api.reopen()
    r = again.client.post(f"/v1/schedules/{sid}/run", headers=AUTH)
    assert r.status_code == 422 and "outside" in r.json()["detail"]
    assert again.store.list_jobs() == [] and again.submitter.submitted == []


# ---------------------------------------------------------------------- handing a stored job to Ray


def test_a_queued_job_swapped_before_ray_takes_it_fails_and_never_reaches_ray(api: Api) -> None:
    api.submitter.down = True  # Ray is down: the job is stored and waits
    r = api.client.post("/v1/jobs", json=api.spec(), headers=AUTH)
    assert r.status_code == 201 and r.json()["status"] == "QUEUED"
    job_id = r.json()["id"]
    _swap_for_link(api.root / "data" / "set", _outside(api))

    again = api.reopen()  # the service restarts; Ray is back
    again.submitter.down = False
    again.clock.advance(60)
    again.svc.jobs.reconcile_once()
    job = again.client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
    assert job["status"] == "FAILED" and job["finished_at"] is not None
    assert job["error"].startswith("refused before it ran: data.scores: ") and "outside" in job["error"]
    assert again.submitter.submitted == []


# ---------------------------------------------------------------------- the job process itself


def _run_entrypoint(api: Api, job_id: str) -> subprocess.CompletedProcess[str]:
    """Run the entrypoint the service submitted, as Ray would (a real process)."""
    argv = api.entrypoint(job_id)
    assert argv[:3] == ["python", "-m", "service.jobrun"]
    env = {**os.environ, **next(e for s, _, e, _ in api.submitter.submitted if s == job_id)}
    return subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)


def test_the_job_refuses_a_folder_swapped_after_submission(api: Api) -> None:
    r = api.client.post("/v1/jobs", json=api.spec(), headers=AUTH)
    assert r.status_code == 201, r.text
    job = r.json()
    _swap_for_link(api.root / "data" / "set", _outside(api))

    p = _run_entrypoint(api, job["id"])
    assert p.returncode == 2, (p.stdout, p.stderr)
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith(f"sedtune job {job['id']}: error: data.scores: ") and "outside" in line
    assert "Traceback" not in p.stderr
    status = read_status(job["output_dir"])
    assert status["state"] == "failed" and status["error"].startswith("data.scores: ")
    assert "outside the allowed data roots" in status["error"]
    # the service records it as the job's reason once Ray reports the failure
    api.submitter.set(job["id"], "FAILED", "Job entrypoint command failed with exit code 2")
    api.svc.jobs.reconcile_once()
    assert api.store.get_job(job["id"]).error == status["error"]


def test_the_job_refuses_a_shard_linked_out_and_a_changed_job_file(api: Api) -> None:
    r = api.client.post("/v1/jobs", json=api.spec(), headers=AUTH)
    job = r.json()
    outside = _outside(api)
    (outside / "scores" / "s.parquet").write_bytes(b"PAR1")
    (api.root / "data" / "set" / "scores").mkdir()
    (api.root / "data" / "set" / "scores" / "s.parquet").symlink_to(outside / "scores" / "s.parquet")
    p = _run_entrypoint(api, job["id"])
    assert p.returncode == 2 and "holds 's.parquet', a symlink to" in p.stderr, p.stderr

    # a job file edited after the service wrote it (wider roots) is refused unread
    argv = api.entrypoint(job["id"])
    path = argv[argv.index("--spec-file") + 1]
    doc = json.loads(Path(path).read_text())
    doc["confinement"]["data_roots"] = ["/"]
    Path(path).write_text(json.dumps(doc))
    p = _run_entrypoint(api, job["id"])
    assert p.returncode == 2 and "SHA-256 differs" in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_jobrun_spec_file_errors_are_one_line(tmp_path, capsys) -> None:
    from service.jobrun import main

    spec = {"name": "p", "data": {"scores": str(tmp_path / "none"), "ground_truth": str(tmp_path / "g.tsv")},
            "strategies": [{"name": "manual"}], "output": str(tmp_path / "out")}
    plain = tmp_path / "spec.json"
    plain.write_text(json.dumps(spec))
    # a plain JSON spec still runs by hand (no confinement): here its data is missing
    assert main(["--job-id", "j-00000003", "--spec-file", str(plain)]) == 2
    assert "data.scores" in capsys.readouterr().err
    for args, text in ((["--spec-file", str(tmp_path / "missing.json")], "cannot read it"),
                       (["--spec-file", str(plain), "--spec-sha256", "0" * 64], "SHA-256 differs"),
                       (["--spec-file", str(tmp_path)], "cannot read it")):
        assert main(["--job-id", "j-00000004", *args]) == 2
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1, err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "sedtune.jobfile/1", "job_id": "j-99999999", "spec": spec}))
    assert main(["--job-id", "j-00000005", "--spec-file", str(other)]) == 2
    assert "job 'j-99999999''s, not 'j-00000005''s" in capsys.readouterr().err
