"""Limits (issue 14): request bodies bounded before they are read (413, also through a real
uvicorn with a 200 MB Content-Length and with a chunked stream), the spec size limit stated at
validation, a ~140 KB spec delivered to its job in a file, and the service's own files out of
the jobs' output tree (a job named ``mlflow.db``; MLflow tracking still works)."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from service.results.tracking import try_log
from tests.unit.api_support import (
    AUTH,
    TOKEN,
    Api,
    api_fixture,  # noqa: F401  (the `api` fixture)
    make_api,
    make_settings,
    serve,
    write_fake_result,
)

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def _one_line_413(r) -> None:
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert "\n" not in detail and "the limit is 1048576 bytes (SEDTUNE_MAX_BODY_BYTES)" in detail


def test_a_body_over_the_limit_is_413_and_stores_nothing(api: Api) -> None:
    body = json.dumps({**api.spec(), "pad": "x" * MiB}).encode()
    r = api.client.post("/v1/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"})
    _one_line_413(r)
    assert f"request body of {len(body)} bytes" in r.json()["detail"]
    r = api.client.post("/v1/schedules", content=body, headers={**AUTH, "Content-Type": "application/json"})
    _one_line_413(r)
    assert api.store.list_jobs() == [] and api.store.list_schedules() == []
    # without a token: 401 first, the body is not looked at
    r = api.client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    # a body just under the limit is read (and refused for what it is)
    r = api.client.post("/v1/jobs", content=b" " * (MiB - 10) + b"{}",
                        headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422


def _http(port: int, head: bytes, body_chunks: list[bytes] | None = None, timeout_s: float = 20) -> bytes:
    """Send a request head (and optionally body chunks) on a raw socket; the response's bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(head)
        for chunk in body_chunks or []:
            try:
                s.sendall(chunk)
            except OSError:  # the server answered and closed: it read no further
                break
        data = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                part = s.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
        return data


def test_a_real_server_answers_413_from_the_headers_and_caps_a_streamed_body(api: Api) -> None:
    with serve(api) as url:
        port = int(url.rsplit(":", 1)[1])
        # 200 MB announced, none sent: the answer comes from the headers alone
        head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {200 * MiB}\r\n\r\n").encode()
        reply = _http(port, head)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        assert body["detail"] == ("request body of 209715200 bytes; the limit is 1048576 bytes "
                                  "(SEDTUNE_MAX_BODY_BYTES)")
        # chunked, no Content-Length: refused once it goes over the limit
        head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        chunk = b"x" * 65536
        chunks = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"] * 40  # 2.5 MiB offered
        reply = _http(port, head, chunks)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"streamed request body over 1048576 bytes" in reply
        # a small chunked body goes through
        spec = json.dumps(api.spec()).encode()
        reply = _http(port, head.replace(b"Transfer-Encoding", b"Connection: close\r\nTransfer-Encoding"),
                      [f"{len(spec):x}\r\n".encode() + spec + b"\r\n0\r\n\r\n"])
        assert reply.startswith(b"HTTP/1.1 201"), reply[:300]
    assert len(api.store.list_jobs()) == 1


def test_the_spec_size_limit_is_stated_at_validation(tmp_path) -> None:
    (tmp_path / "data" / "set").mkdir(parents=True)
    api = make_api(tmp_path, make_settings(tmp_path, max_spec_bytes=4096))
    spec = api.spec()
    spec["data"]["classes"] = ["Dog"] * 1000
    r = api.client.post("/v1/jobs", json=spec, headers=AUTH)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == "spec"
    assert "the limit is 4096 bytes (SEDTUNE_MAX_SPEC_BYTES)" in r.json()["message"]
    body = {"name": "big", "cron": "0 3 * * *", "spec": spec}
    r = api.client.post("/v1/schedules", json=body, headers=AUTH)
    assert r.status_code == 422 and "the limit is 4096 bytes" in r.json()["message"]
    assert api.store.list_jobs() == [] and api.store.list_schedules() == []


def test_a_140_kb_spec_reaches_its_job_in_a_file(api: Api) -> None:
    spec = api.spec()
    spec["data"]["classes"] = [f"class-{i:05d}-{'x' * 12}" for i in range(6000)]
    assert 140_000 < len(json.dumps(spec)) < 200_000
    r = api.client.post("/v1/jobs", json=spec, headers=AUTH)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    (_, entrypoint, env, _), = api.submitter.submitted
    assert len(entrypoint) < 1000  # was the spec's base64: "Argument list too long"
    assert api.sent_spec(job_id)["data"]["classes"] == spec["data"]["classes"]
    # run it as Ray does (one shell command): the spec arrives; the job then stops at its (absent) data
    cmd = shlex.join([sys.executable, *shlex.split(entrypoint)[1:]])
    p = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, **env})
    assert p.returncode == 2, p.stderr
    assert "Argument list too long" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(f"sedtune job {job_id}: error: data.scores")


def test_the_services_files_are_out_of_the_jobs_output_tree(tmp_path) -> None:
    (tmp_path / "data" / "set").mkdir(parents=True)
    api = make_api(tmp_path, make_settings(tmp_path, tracking_uri=""))  # the embedded MLflow store
    out = tmp_path / "out"
    assert api.settings.tracking_uri == f"sqlite:///{out}/.sedtune/mlflow.db"
    # a job named like the service's files is an ordinary job
    for name in ("mlflow.db", "sedtune.db", "mlartifacts"):
        r = api.client.post("/v1/jobs", json=api.spec(name=name), headers=AUTH)
        assert r.status_code == 201, r.text
        assert r.json()["output_dir"].startswith(f"{out}/{name}/j-")
    # no spec may point into the service's folder
    for over, field in (({"output": str(out / ".sedtune")}, "output"),
                        ({"output": str(out / "x" / ".." / ".sedtune" / "jobs")}, "output")):
        r = api.client.post("/v1/jobs", json=api.spec(**over), headers=AUTH)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, r.text
    # the job named mlflow.db made its folder where the old default store was; tracking still works
    job = api.store.list_jobs(name="mlflow.db")[0]
    write_fake_result(job.output_dir, job.id, 0.4, 0.5)
    (Path(job.output_dir) / "spec.resolved.json").write_text(json.dumps(job.spec))
    report, line = try_log(job.output_dir, api.settings.tracking_uri, "later")
    assert report is not None, line
    assert line.startswith("tracked:") and os.path.isfile(out / ".sedtune" / "mlflow.db")
    # (the old default, <output root>/mlflow.db, is now that job's folder: SQLite cannot open it there)
    assert (out / "mlflow.db").is_dir()
