"""Bearer-token auth: every route but /health answers 401 without a valid token; tokens are never logged."""

from __future__ import annotations

import logging
import re

import pytest
from starlette.routing import Route

from service.api.auth import token_ok
from service.server.settings import load_settings
from tests.unit.api_support import (
    AUTH,
    OTHER_TOKEN,
    TOKEN,
    Api,
    api_fixture,  # noqa: F401  (the `api` fixture)
)


def _flat(routes) -> list[Route]:
    """Every route, with routers included by ``include_router`` opened up.

    FastAPI >= 0.16x keeps an included router as one entry (``original_router``; its routes
    carry the router's prefix); older versions copy its routes into ``app.routes``.
    """
    out: list[Route] = []
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            prefix = getattr(getattr(r, "include_context", None), "prefix", "") or ""
            out += [_Prefixed(prefix, x) for x in _flat(inner.routes)]
        elif isinstance(r, Route):
            out.append(r)
    return out


class _Prefixed:
    def __init__(self, prefix: str, route: Route) -> None:
        self.path = prefix + route.path
        self.methods = route.methods


def _routes(app) -> list[tuple[str, str]]:
    out = []
    for r in _flat(app.routes):
        path = re.sub(r"\{[^}]+\}", "x-1", r.path)
        for m in sorted(r.methods or []):
            if m != "HEAD":
                out.append((m, path))
    return out


def test_every_route_is_enumerated(api: Api) -> None:
    routes = _routes(api.client.app)
    paths = {p for _, p in routes}
    # the issue's surface: jobs, schedules, health, ready and the OpenAPI document
    for p in ("/health", "/ready", "/openapi.json", "/v1/jobs", "/v1/jobs/x-1", "/v1/jobs/x-1/cancel",
              "/v1/jobs/x-1/result", "/v1/schedules", "/v1/schedules/x-1", "/v1/schedules/x-1/pause",
              "/v1/schedules/x-1/resume", "/v1/schedules/x-1/run", "/v1/schedules/x-1/history"):
        assert p in paths, p
    assert len(routes) >= 16
    # and nothing the OpenAPI document publishes is missed
    doc = api.client.get("/openapi.json", headers=AUTH).json()
    published = {(m.upper(), re.sub(r"\{[^}]+\}", "x-1", p)) for p, ops in doc["paths"].items() for m in ops}
    assert published <= set(routes), published - set(routes)


@pytest.mark.parametrize("header", [
    None, "Bearer", "Bearer ", "Bearer wrong-token", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
])
def test_401_on_every_route_but_health(api: Api, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in _routes(api.client.app):
        r = api.client.request(method, path, headers=headers, json={"garbage": True})
        if path == "/health":
            assert r.status_code == 200, (method, path)
        else:
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "token" in r.json()["detail"]


def test_unknown_paths_need_a_token_too(api: Api) -> None:
    assert api.client.get("/v2/nothing").status_code == 401
    assert api.client.get("/v2/nothing", headers=AUTH).status_code == 404


@pytest.mark.parametrize("token", [TOKEN, OTHER_TOKEN])
def test_valid_tokens_pass_on_every_route(api: Api, token: str) -> None:
    for method, path in _routes(api.client.app):
        r = api.client.request(method, path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code != 401, (method, path)
        assert r.status_code < 500, (method, path, r.text)


def test_tokens_never_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for method, path in _routes(api.client.app):
        api.client.request(method, path, headers=AUTH)
        api.client.request(method, path, headers={"Authorization": "Bearer secret-wrong-value"})
    assert TOKEN not in caplog.text
    assert "secret-wrong-value" not in caplog.text
    assert TOKEN not in repr(api.settings)
    assert TOKEN not in api.client.get("/openapi.json", headers=AUTH).text


def test_token_compare() -> None:
    assert token_ok("Bearer abc", {"abc", "def"})
    assert token_ok("bearer   def", {"abc", "def"})
    assert not token_ok("Bearer abcd", {"abc"})
    assert not token_ok("Bearer ", {"abc"})
    assert not token_ok(None, {"abc"})
    assert not token_ok("Bearer \udcff", {"abc"})


def test_tokens_from_env_and_file(tmp_path) -> None:
    f = tmp_path / "tokens"
    f.write_text("# service tokens\nfile-token-1\n\n  file-token-2  # ci\n")
    s = load_settings(environ={"SEDTUNE_TOKENS": "env-a, env-b", "SEDTUNE_TOKENS_FILE": str(f),
                               "SEDTUNE_DATA_DIR": str(tmp_path)})
    assert s.tokens == {"env-a", "env-b", "file-token-1", "file-token-2"}
    assert "env-a" not in repr(s) and "file-token-1" not in repr(s)


def test_serve_refuses_to_start_without_tokens(tmp_path, capsys, monkeypatch) -> None:
    from service.cli import main

    for var in ("SEDTUNE_TOKENS", "SEDTUNE_TOKENS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SEDTUNE_DATA_DIR", str(tmp_path))
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sedtune: error: no bearer tokens configured") and "\n" not in err


def test_serve_on_a_taken_port_fails_before_its_loops_start(tmp_path, capsys, monkeypatch) -> None:
    import socket

    from service.cli import main
    from service.server import loops

    started: list[str] = []
    monkeypatch.setattr(loops.Loop, "start", lambda self: started.append(self.name) or self)
    monkeypatch.setenv("SEDTUNE_TOKENS", "t")
    monkeypatch.setenv("SEDTUNE_DATA_DIR", str(tmp_path))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port)]) == 2
    finally:
        taken.close()
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sedtune: error: --host/--port: cannot listen on 127.0.0.1:{port}:")
    assert "\n" not in err
    assert started == []  # no reconciler, no scheduler: nothing was dispatched
