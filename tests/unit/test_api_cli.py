"""The service CLI against a real uvicorn server on loopback (fake cluster): every client command,
one-line errors, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from service.cli import main
from tests.unit.api_support import TOKEN, Api, make_api, serve, write_fake_result


@pytest.fixture
def server(tmp_path, monkeypatch) -> Iterator[tuple[Api, str]]:
    (tmp_path / "data" / "set").mkdir(parents=True)  # the data root; check_data is off
    api = make_api(tmp_path)
    with serve(api) as url:
        monkeypatch.setenv("SEDTUNE_SERVER", url)
        monkeypatch.setenv("SEDTUNE_TOKEN", TOKEN)
        yield api, url


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err: str) -> None:
    assert err.count("\n") == 1 and err.startswith("sedtune: ") and "Traceback" not in err, err


def test_submit_show_list_result_cancel(server, tmp_path, capsys) -> None:
    api, _ = server
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(api.spec()))
    rc, out, _ = _run(capsys, "submit", str(spec), "--json")
    assert rc == 0
    job_id = json.loads(out)["id"]
    rc, out, _ = _run(capsys, "submit", str(spec))
    assert rc == 0 and out.startswith("submitted job j-") and "PENDING" in out
    other = out.split()[2]

    rc, out, _ = _run(capsys, "jobs", "list")
    assert rc == 0 and job_id in out and "STATUS" in out
    rc, out, _ = _run(capsys, "jobs", "show", job_id)
    assert rc == 0 and f"job        {job_id}" in out and "ray job" in out

    rc, _, err = _run(capsys, "jobs", "result", job_id)
    assert rc == 2 and "409" in err
    _one_line_error(err)

    write_fake_result(api.store.get_job(job_id).output_dir, job_id, 0.4, 0.5)
    api.submitter.set(job_id, "SUCCEEDED")
    api.svc.jobs.reconcile_once()
    rc, out, _ = _run(capsys, "jobs", "result", job_id, "--watch")
    assert rc == 0 and "bayes" in out and "best parameters (bayes/robust)" in out and "Dog" in out
    rc, out, _ = _run(capsys, "jobs", "show", job_id, "--watch")
    assert rc == 0 and "SUCCEEDED" in out and "mlflow" in out
    rc, out, _ = _run(capsys, "jobs", "list", "--status", "SUCCEEDED", "--json")
    assert [j["id"] for j in json.loads(out)["jobs"]] == [job_id]

    rc, out, _ = _run(capsys, "jobs", "cancel", other)
    assert rc == 0 and "cancel requested" in out
    rc, _, err = _run(capsys, "jobs", "cancel", other)
    assert rc == 2 and "already finished" in err
    _one_line_error(err)


def test_schedules_commands(server, tmp_path, capsys) -> None:
    api, _ = server
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(api.spec()))
    rc, out, _ = _run(capsys, "schedules", "create", "nightly", str(spec), "--cron", "30 2 * * *", "--tz",
                      "Europe/Paris", "--json")
    assert rc == 0
    sid = json.loads(out)["id"]
    rc, out, _ = _run(capsys, "schedules", "list")
    assert rc == 0 and "nightly" in out and "Europe/Paris" in out
    rc, out, _ = _run(capsys, "schedules", "run", sid)
    assert rc == 0 and "manual: job j-" in out
    rc, out, _ = _run(capsys, "schedules", "run", sid)
    assert rc == 1 and "skipped: overlap" in out
    rc, out, _ = _run(capsys, "schedules", "history", sid)
    assert rc == 0 and len(out.strip().splitlines()) == 2
    rc, out, _ = _run(capsys, "schedules", "pause", sid)
    assert rc == 0 and "paused" in out
    rc, out, _ = _run(capsys, "schedules", "resume", sid)
    assert rc == 0 and "active" in out
    rc, out, _ = _run(capsys, "schedules", "show", sid)
    assert rc == 0 and "30 2 * * *" in out
    rc, out, _ = _run(capsys, "schedules", "delete", sid)
    assert rc == 0
    rc, _, err = _run(capsys, "schedules", "show", sid)
    assert rc == 2 and "404" in err
    _one_line_error(err)
    rc, _, err = _run(capsys, "schedules", "create", "bad", str(spec), "--cron", "99 * * * *")
    assert rc == 2 and "cron: not a valid cron line" in err
    _one_line_error(err)


def test_errors_are_one_line(server, tmp_path, capsys, monkeypatch) -> None:
    api, _ = server
    spec = tmp_path / "job.yaml"
    bad = api.spec()
    bad["data"]["scores"] = "/etc"
    spec.write_text(yaml.safe_dump(bad))
    rc, _, err = _run(capsys, "submit", str(spec))
    assert rc == 2 and "data.scores:" in err and "outside the allowed data roots" in err
    _one_line_error(err)
    rc, _, err = _run(capsys, "submit", str(tmp_path / "missing.yaml"))
    assert rc == 2 and "spec file not found" in err
    _one_line_error(err)
    rc, _, err = _run(capsys, "jobs", "list", "--token", "wrong")
    assert rc == 2 and "401" in err and "wrong" not in err
    _one_line_error(err)
    monkeypatch.delenv("SEDTUNE_TOKEN")
    rc, _, err = _run(capsys, "jobs", "list")
    assert rc == 2 and "no token" in err
    rc, _, err = _run(capsys, "jobs", "list", "--token", "x", "--server", "http://127.0.0.1:1")
    assert rc == 1 and "cannot reach http://127.0.0.1:1" in err
    _one_line_error(err)
