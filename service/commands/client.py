"""A small client of the sedtune HTTP API (standard library only), used by the CLI.

Errors are one line: a 4xx answer raises :class:`envs.errors.SedtuneInputError` with the
server's message (422: the field path and the rule), an unreachable server or a 5xx answer
raises :class:`ServiceError`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from envs.errors import SedtuneInputError

DEFAULT_TIMEOUT_S = 60.0


class ServiceError(Exception):
    """The server cannot be reached or failed (5xx)."""


def _message(status: int, body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return " ".join(body.decode("utf-8", "replace").split())[:500] or f"HTTP {status}"
    if isinstance(doc, dict):
        if isinstance(doc.get("message"), str):
            return str(doc["message"])
        detail = doc.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            d = detail[0]
            return f"{d.get('field') or '.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
        if doc.get("skip_reason"):
            return f"skipped: {doc['skip_reason']}"
    return json.dumps(doc)[:500]


class ServiceClient:
    """Calls the API of one server with one token.

    Args:
        url: Base URL (``http://host:8000``).
        token: Bearer token (never printed).
        timeout_s: Seconds per request.
    """

    def __init__(self, url: str, token: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not url:
            raise SedtuneInputError("no server: pass --server URL or set SEDTUNE_SERVER")
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            raise SedtuneInputError(f"--server must be an http(s) URL, got {url!r}")
        if not token:
            raise SedtuneInputError("no token: pass --token or set SEDTUNE_TOKEN")
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
                ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        """One request; returns (status, parsed JSON or None).

        Args:
            method: HTTP method.
            path: Path under the base URL.
            body: JSON body.
            query: Query parameters (None values left out).
            ok: Non-2xx statuses returned instead of raised.

        Raises:
            SedtuneInputError: A 4xx answer not in ``ok``.
            ServiceError: No answer or a 5xx answer.
        """
        url = self.url + path
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ServiceError(f"cannot reach {self.url} ({reason})") from None
        if status >= 400 and status not in ok:
            msg = _message(status, raw)
            if status >= 500:
                raise ServiceError(f"{self.url} failed on {method} {path} (HTTP {status}): {msg}")
            raise SedtuneInputError(f"{method} {path}: HTTP {status}: {msg}")
        return status, (json.loads(raw) if raw else None)

    def get(self, path: str, **query: Any) -> Any:
        """GET and return the JSON."""
        return self.request("GET", path, query=query)[1]

    def post(self, path: str, body: Any = None) -> Any:
        """POST and return the JSON."""
        return self.request("POST", path, body=body)[1]
