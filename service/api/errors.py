"""Error responses: one line for 401/404/409/413/503; field paths for 422.

Routes let the services' exceptions propagate; :func:`add_service_error_handlers` answers
them the same way everywhere.

A 422 body is ``{"detail": [{"loc": [...], "field": "data.scores", "msg": "...", "type": "..."}],
"message": "data.scores: ..."}`` both for FastAPI's own validation and for sedtune's checks
(path policy, strategy options, the data), so a client reads the field path the same way.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.server.idempotency import HEADER, KeyReusedError
from service.server.jobs import ConflictError, NotFoundError
from service.server.policy import FieldError
from service.server.submitter import SubmitterError
from service.tuning.spec import field_path


def _field(loc: list[Any] | tuple[Any, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    return field_path(parts, empty="body")


def _loc(field: str) -> list[str | int]:
    out: list[str | int] = ["body"]
    for part in field.replace("[", ".[").split("."):
        if part.startswith("[") and part.endswith("]") and part[1:-1].isdigit():
            out.append(int(part[1:-1]))
        elif part:
            out.append(part)
    return out


def _clean(obj: Any) -> Any:
    """Strings made encodable (a lone surrogate from the request becomes ``\\ud800``)."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, list):
        return [_clean(x) for x in obj]
    if isinstance(obj, dict):
        return {_clean(k): _clean(v) for k, v in obj.items()}
    return obj


def unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    """A 422 response with field paths."""
    errors = _clean(errors)
    first = errors[0] if errors else {"field": "body", "msg": "invalid request"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return JSONResponse(
        status_code=422,
        content=jsonable_encoder({"detail": errors, "message": f"{first['field']}: {first['msg']}{more}"}),
    )


def field_error(e: FieldError) -> JSONResponse:
    """A 422 response for a sedtune check."""
    return unprocessable([{"loc": _loc(e.field), "field": e.field, "msg": e.rule, "type": "value_error"}])


#: Service exceptions and the status each answers with (body ``{"detail": one line}``).
STATUS_OF: dict[type[Exception], int] = {NotFoundError: 404, ConflictError: 409, SubmitterError: 503}


def add_service_error_handlers(app: FastAPI) -> None:
    """Answer the services' exceptions in every route: :data:`STATUS_OF`, and 422 for a FieldError
    or a reused ``Idempotency-Key``."""

    async def one_line(request: Request, exc: Exception) -> JSONResponse:
        status = next(code for cls, code in STATUS_OF.items() if isinstance(exc, cls))
        return JSONResponse(status_code=status, content={"detail": " ".join(str(exc).split())})

    async def field(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FieldError)
        return field_error(exc)

    async def key_reused(request: Request, exc: Exception) -> JSONResponse:
        return unprocessable([{"loc": ["header", HEADER], "field": HEADER, "msg": " ".join(str(exc).split()),
                               "type": "idempotency_key_reused"}])

    for cls in STATUS_OF:
        app.add_exception_handler(cls, one_line)
    app.add_exception_handler(FieldError, field)
    app.add_exception_handler(KeyReusedError, key_reused)


async def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation errors, with a ``field`` path per error and no echoed input."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    out = []
    for err in errors:
        loc = list(err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append(
            {
                "loc": [p if isinstance(p, (int, str)) else str(p) for p in loc],
                "field": _field(loc),
                "msg": " ".join(msg.split()),
                "type": str(err.get("type", "value_error")),
            }
        )
    return unprocessable(out)


def http_error(status: int, detail: str) -> HTTPException:
    """An HTTPException with a one-line detail."""
    return HTTPException(status_code=status, detail=" ".join(detail.split()))
