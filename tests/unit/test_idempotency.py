"""Idempotent submission (issue 14): the same ``Idempotency-Key`` answers the same job or schedule
(also after a restart and under a concurrent duplicate), another request with a used key is
refused, and the CLI sends a key with every submission and retries a cut connection with it
without creating a second job (real uvicorn behind a real TCP proxy that cuts the first answer)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import yaml

from service.cli import main
from service.commands.client import ServiceClient, ServiceError
from service.server.idempotency import IdempotencyKey, principal_of
from service.store.repo import KeyTakenError
from tests.unit.api_support import (
    AUTH,
    OTHER_TOKEN,
    TOKEN,
    Api,
    api_fixture,  # noqa: F401  (the `api` fixture)
    serve,
)


def _post(api: Api, key: str | None, body: dict, path: str = "/v1/jobs", token: str = TOKEN):
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.client.post(path, json=body, headers=headers)


def test_the_same_key_answers_the_same_job(api: Api) -> None:
    first = _post(api, "key-1", api.spec())
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = _post(api, "key-1", api.spec())
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    # the same spec, spelled otherwise (key order, defaults written out), is the same request
    spelled = {"strategies": api.spec()["strategies"], "name": "unit", "data": api.spec()["data"],
               "selection": "robust"}
    assert _post(api, "key-1", spelled).json()["id"] == first.json()["id"]
    assert len(api.store.list_jobs()) == 1 and len(api.submitter.submitted) == 1
    # a restarted service still knows the key
    again = api.reopen()
    r = _post(again, "key-1", api.spec())
    assert r.status_code == 200 and r.json()["id"] == first.json()["id"]
    # without a key, or with another key, a new job
    assert _post(api, None, api.spec()).status_code == 201
    assert _post(api, "key-2", api.spec()).status_code == 201
    assert len(api.store.list_jobs()) == 3


def test_a_used_key_with_another_request_is_refused(api: Api) -> None:
    job_id = _post(api, "key-1", api.spec()).json()["id"]
    r = _post(api, "key-1", api.spec(name="other"))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert r.json()["message"].startswith("Idempotency-Key: Idempotency-Key 'key-1' was sent before with a "
                                          f"different request (which created job {job_id})")
    assert "\n" not in r.json()["message"] and len(api.store.list_jobs()) == 1
    # keys are the token's: another token's same key is another request
    r = _post(api, "key-1", api.spec(name="other"), token=OTHER_TOKEN)
    assert r.status_code == 201 and r.json()["id"] != job_id


def test_a_refused_spec_stores_no_key(api: Api) -> None:
    bad = api.spec()
    bad["data"]["scores"] = "/etc"
    assert _post(api, "key-1", bad).status_code == 422
    assert _post(api, "key-1", api.spec()).status_code == 201  # the key was not used up


@pytest.mark.parametrize("key", [b"", b"has space", b"x" * 201, "é".encode()])
def test_a_malformed_key_is_422(api: Api, key: bytes) -> None:
    r = api.client.post("/v1/jobs", json=api.spec(), headers={**AUTH, "Idempotency-Key": key})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"], r.text
    assert api.store.list_jobs() == []


def test_a_concurrent_duplicate_stores_one_job(api: Api) -> None:
    from service.tuning.spec import parse_spec

    spec = parse_spec(api.spec())
    key = IdempotencyKey(principal_of(TOKEN), "race")
    jobs = api.svc.jobs
    a, b = jobs.new_job(spec), jobs.new_job(spec)
    api.store.add_job(a, key.record("jobs", "h", a.id, api.clock()))
    with pytest.raises(KeyTakenError):  # the loser stores neither its job nor its key
        api.store.add_job(b, key.record("jobs", "h", b.id, api.clock()))
    assert [j.id for j in api.store.list_jobs()] == [a.id]
    assert api.store.get_key(key.principal, "jobs", "race").resource_id == a.id


def test_schedules_take_a_key_too(api: Api) -> None:
    body = {"name": "nightly", "cron": "0 3 * * *", "spec": api.spec()}
    first = _post(api, "s-key", body, "/v1/schedules")
    assert first.status_code == 201
    again = _post(api, "s-key", body, "/v1/schedules")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    r = _post(api, "s-key", {**body, "cron": "0 4 * * *"}, "/v1/schedules")
    assert r.status_code == 422 and "different request (which created schedule" in r.json()["message"]
    assert _post(api, None, body, "/v1/schedules").status_code == 409  # no key: the name is taken
    api.client.delete(f"/v1/schedules/{first.json()['id']}", headers=AUTH)
    r = _post(api, "s-key", body, "/v1/schedules")
    assert r.status_code == 409 and "has been deleted; send a new key" in r.json()["detail"]


# ---------------------------------------------------------------------- the CLI over a cut connection


class CuttingProxy:
    """A TCP proxy on loopback that cuts its first ``cut`` connections after the server answered.

    Each connection carries one HTTP/1.1 request (the client sends ``Connection: close``): the
    request is forwarded whole, the server's whole answer read, then either passed on or dropped
    with a reset (the client never sees it).
    """

    def __init__(self, upstream_port: int, cut: int = 1) -> None:
        self.upstream_port = upstream_port
        self.cut = cut
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = _read_request(conn)
                self.requests.append(request)
                with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30) as up:
                    up.sendall(request)
                    answer = b""
                    while chunk := up.recv(65536):
                        answer += chunk
                if len(self.requests) <= self.cut:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    continue  # closed with a reset: the answer is lost
                conn.sendall(answer)

    @contextmanager
    def running(self) -> Iterator[str]:
        self.thread.start()
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            self.sock.close()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def _keys(requests: list[bytes]) -> list[str]:
    return [line.split(b":", 1)[1].strip().decode() for r in requests for line in r.split(b"\r\n")
            if line.lower().startswith(b"idempotency-key:")]


def test_the_cli_retries_a_cut_submission_with_the_same_key_and_one_job_exists(api: Api, tmp_path, capsys,
                                                                               monkeypatch) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(api.spec()))
    with serve(api) as url:
        proxy = CuttingProxy(int(url.rsplit(":", 1)[1]), cut=1)
        with proxy.running() as proxy_url:
            monkeypatch.setenv("SEDTUNE_SERVER", proxy_url)
            monkeypatch.setenv("SEDTUNE_TOKEN", TOKEN)
            rc = main(["submit", str(spec), "--json"])
            out, err = capsys.readouterr()
    assert rc == 0, err
    jobs = api.store.list_jobs()
    assert len(jobs) == 1 and json.loads(out)["id"] == jobs[0].id
    keys = _keys(proxy.requests)
    assert len(keys) == 2 and keys[0] == keys[1] and len(api.submitter.submitted) == 1


def test_the_cli_key_can_be_given_and_a_lost_server_names_it(api: Api, tmp_path, capsys, monkeypatch) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(api.spec()))
    with serve(api) as url:
        monkeypatch.setenv("SEDTUNE_SERVER", url)
        monkeypatch.setenv("SEDTUNE_TOKEN", TOKEN)
        ids = []
        for _ in range(2):
            assert main(["submit", str(spec), "--json", "--idempotency-key", "my-key-7"]) == 0
            ids.append(json.loads(capsys.readouterr().out)["id"])
    assert ids[0] == ids[1] and len(api.store.list_jobs()) == 1
    # nothing listens: every attempt fails; the one line names the key to send again
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    client = ServiceClient(f"http://127.0.0.1:{port}", TOKEN, attempts=3, backoff_s=0.0)
    with pytest.raises(ServiceError) as e:
        client.create("/v1/jobs", api.spec(), key="k-42")
    assert "sent 3 times with Idempotency-Key k-42" in str(e.value) and "\n" not in str(e.value)
