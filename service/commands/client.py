"""A small client of the sedtune HTTP API (standard library only), used by the CLI.

Errors are one line: a 4xx answer raises :class:`envs.errors.SedtuneInputError` with the
server's message (422: the field path and the rule), an unreachable server or a 5xx answer
raises :class:`ServiceError`.

Creating requests (``POST /v1/jobs``, ``POST /v1/schedules``) go through :meth:`ServiceClient.create`:
each carries an ``Idempotency-Key`` (a fresh one per submission), and a request whose answer
was lost (connection refused or cut, time-out, 502/503/504 from a proxy) is sent again with the
same key, so the service answers the job the first attempt created instead of making a second.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from envs.errors import SedtuneInputError

LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
#: Paths whose POST creates something (sent with an Idempotency-Key, retried).
CREATE_PATHS = ("/v1/jobs", "/v1/schedules")
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Statuses a creating request is sent again on (a proxy or the service not answering).
RETRY_STATUSES = (502, 503, 504)
#: Attempts of a creating request, and the pause before the second (doubling after).
CREATE_ATTEMPTS = 4
RETRY_BACKOFF_S = 0.5


class ServiceError(Exception):
    """The server cannot be reached or failed (5xx)."""


class ConnectionLostError(ServiceError):
    """No answer: the server could not be reached, or the connection was cut or timed out."""


def new_idempotency_key() -> str:
    """A fresh key (32 hex digits)."""
    return uuid.uuid4().hex


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

    def __init__(self, url: str, token: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 attempts: int = CREATE_ATTEMPTS, backoff_s: float = RETRY_BACKOFF_S) -> None:
        if not url:
            raise SedtuneInputError("no server: pass --server URL or set SEDTUNE_SERVER")
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            raise SedtuneInputError(f"--server must be an http(s) URL, got {url!r}")
        if not token:
            raise SedtuneInputError("no token: pass --token or set SEDTUNE_TOKEN")
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
                ok: tuple[int, ...] = (), headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One request; returns (status, parsed JSON or None).

        Args:
            method: HTTP method.
            path: Path under the base URL.
            body: JSON body.
            query: Query parameters (None values left out).
            ok: Non-2xx statuses returned instead of raised.
            headers: More request headers.

        Raises:
            SedtuneInputError: A 4xx answer not in ``ok``.
            ConnectionLostError: No answer.
            ServiceError: A 5xx answer.
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
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            try:
                status, raw = e.code, e.read()
            except OSError as cut:  # the connection broke while the error body was read
                raise ConnectionLostError(f"no answer from {self.url} ({cut})") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e) or type(e).__name__
            raise ConnectionLostError(f"cannot reach {self.url} ({reason})") from None
        if status >= 400 and status not in ok:
            msg = _message(status, raw)
            if status >= 500:
                raise ServiceError(f"{self.url} failed on {method} {path} (HTTP {status}): {msg}")
            raise SedtuneInputError(f"{method} {path}: HTTP {status}: {msg}")
        try:
            return status, (json.loads(raw) if raw else None)
        except ValueError:
            if status in ok:
                return status, None
            raise ServiceError(f"{self.url} answered {method} {path} with HTTP {status}, not JSON") \
                from None

    def create(self, path: str, body: Any, key: str | None = None) -> Any:
        """POST a creating request with an ``Idempotency-Key``; sent again, same key, if the answer is lost.

        Args:
            path: ``/v1/jobs`` or ``/v1/schedules``.
            body: JSON body.
            key: The key (default: a fresh one).

        Returns:
            The created (or, after a lost answer, the earlier created) job or schedule.

        Raises:
            SedtuneInputError: A 4xx answer.
            ServiceError: No answer after every attempt (the line names the key, to retry with).
        """
        key = key or new_idempotency_key()
        error: ServiceError | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                status, doc = self.request("POST", path, body=body, ok=RETRY_STATUSES,
                                           headers={IDEMPOTENCY_HEADER: key})
            except ConnectionLostError as e:
                error = e
            else:
                if status not in RETRY_STATUSES:
                    return doc
                error = ServiceError(f"{self.url} failed on POST {path} (HTTP {status})")
            if attempt < self.attempts:
                LOG.warning("POST %s: %s; sending it again with the same %s (attempt %d of %d)",
                            path, error, IDEMPOTENCY_HEADER, attempt + 1, self.attempts)
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise ServiceError(f"{error}; POST {path} sent {self.attempts} times with {IDEMPOTENCY_HEADER} {key} "
                           f"(send it again with that key: it cannot create a second one)")

    def get(self, path: str, **query: Any) -> Any:
        """GET and return the JSON."""
        return self.request("GET", path, query=query)[1]

    def post(self, path: str, body: Any = None) -> Any:
        """POST and return the JSON (creating paths through :meth:`create`)."""
        if path in CREATE_PATHS:
            return self.create(path, body)
        return self.request("POST", path, body=body)[1]
