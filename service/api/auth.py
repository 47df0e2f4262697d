"""Bearer-token auth: every request but ``GET /health`` carries ``Authorization: Bearer <token>``.

Enforced by an ASGI middleware, before routing and body parsing, so that no route (including
unknown paths, ``/openapi.json`` and requests with malformed bodies) answers anything but 401
without a valid token. Tokens are compared in constant time and never logged; the OpenAPI
document declares the scheme through :data:`bearer_scheme`.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterable

from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

LOG = logging.getLogger(__name__)

UNAUTHORIZED = "missing or invalid bearer token: send 'Authorization: Bearer <token>'"

#: Paths answered without a token.
PUBLIC_PATHS = frozenset({"/health"})

#: Declares the scheme in the OpenAPI document (enforcement is the middleware's).
bearer_scheme = HTTPBearer(auto_error=False, description="a token from SEDTUNE_TOKENS / SEDTUNE_TOKENS_FILE")


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ("" if there is none)."""
    scheme, _, given = (header or "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


def token_ok(header: str | None, tokens: Iterable[str]) -> bool:
    """True if ``header`` is ``Bearer <t>`` for a configured token ``t`` (constant-time compare)."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return False
    ok = False
    for t in tokens:  # compare with every token: time does not tell which one matched
        ok |= hmac.compare_digest(given.encode("utf-8", "surrogateescape"), t.encode("utf-8"))
    return ok


class BearerAuthMiddleware:
    """Answers 401 to any HTTP request without a valid bearer token, except :data:`PUBLIC_PATHS`.

    Args:
        app: The wrapped ASGI app.
        tokens: Accepted tokens (must not be empty).
    """

    def __init__(self, app: ASGIApp, tokens: frozenset[str]) -> None:
        if not tokens:
            raise ValueError("no bearer tokens configured: set SEDTUNE_TOKENS or SEDTUNE_TOKENS_FILE")
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry."""
        if scope["type"] != "http" or scope.get("path") in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        header = None
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                header = v.decode("latin-1")
                break
        if token_ok(header, self.tokens):
            await self.app(scope, receive, send)
            return
        LOG.info("401 for %s %s (%s)", scope.get("method"), scope.get("path"),
                 "no token" if header is None else "invalid token")
        body = json.dumps({"detail": UNAUTHORIZED}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Bearer realm="sedtune"')]})
        await send({"type": "http.response.body", "body": body})
