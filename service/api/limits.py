"""The request body limit: a body over ``max_body_bytes`` is answered 413 before it is read.

An ASGI middleware, inside the auth middleware (a request without a valid token gets 401 before
any of its body is read). A ``Content-Length`` over the limit is refused from the headers
alone; a body without one (``Transfer-Encoding: chunked``) is read up to the limit and refused
as soon as it goes over, so the service never holds more than the limit of one request. The
answer is one line of JSON, ``{"detail": "request body ...: the limit is N bytes
(SEDTUNE_MAX_BODY_BYTES)"}``, and the connection is closed (the rest of the body is not read).
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOG = logging.getLogger(__name__)


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Answers 413 to a request whose body is over ``max_bytes`` (400 to a malformed Content-Length).

    Args:
        app: The wrapped ASGI app.
        max_bytes: The largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, what: str) -> str:
        return f"{what}; the limit is {self.max_bytes} bytes (SEDTUNE_MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None:
            text = length.decode("latin-1").strip()
            if not text.isdigit():
                await _answer(send, 400, f"Content-Length must be a number of bytes, got {text[:40]!r}")
                return
            if int(text) > self.max_bytes:
                LOG.info("413 for %s %s (Content-Length %s)", scope.get("method"), scope.get("path"), text)
                await _answer(send, 413, self._too_large(f"request body of {int(text)} bytes"))
                return
            # the HTTP server delivers no more than the declared length
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                LOG.info("413 for %s %s (streamed body)", scope.get("method"), scope.get("path"))
                await _answer(send, 413, self._too_large(f"streamed request body over {self.max_bytes} "
                                                         "bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
