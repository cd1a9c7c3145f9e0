"""Every error the API answers, as an RFC 9457 problem (`application/problem+json`), from one place.

`STATUS_BY_ERROR` maps exception classes to HTTP statuses; an exception takes the status of the
nearest class in its MRO. Every problem has `type` (a URL per `code`), `title`, `status`, `detail`
and the stable `code`, plus the error's context in camelCase (ints stay ints, bytes become hex).
4xx problems describe the request and show the error's message and context; 5xx problems never
show internals (a node URL may hold an API key): their detail is generic and the error is logged.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger import errors
from ledger.chain.rpc import RpcCallError
from ledger.domain import metering
from ledger.services import settlement

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://gridledger.dev/problems/"
RETRY_AFTER_SECONDS = 5


# The one table: exception class -> HTTP status. Order does not matter; the MRO decides.
STATUS_BY_ERROR: dict[type[BaseException], int] = {
    errors.ValidationError: 422,
    errors.TradeRejected: 422,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.DuplicateTrade: 409,
    errors.Paused: 409,
    errors.Unauthenticated: 401,
    errors.Unauthorized: 403,  # from the chain (the service's account lacks a role), or errors.Forbidden
    errors.ChainError: 503,
    RpcCallError: 502,  # the node answered, with an error we did not expect
    # The run's values exceed what the index holds (market limits raised far beyond the defaults).
    settlement.SettlementValueOutOfRange: 422,
    # A refused readings or prices body; the metering routes render its per-row errors.
    metering.MeteringFileError: 422,
    # A stored batch no longer rebuilds its committed root: the store, not the request, is wrong.
    metering.BatchIntegrityError: 500,
    errors.LedgerError: 500,
}

_TITLES = {
    "validation_error": "The request is not valid",
    "internal_error": "Internal server error",
    "chain_unavailable": "The blockchain node is unavailable",
    "body_not_utf8": "The body is not UTF-8",
    "json_too_deep": "The JSON body nests too deep",
}
# Codes of HTTP-level refusals, fixed here (Python's reason phrases change between versions).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "content_too_large",
    429: "rate_limited",
    415: "unsupported_media_type",
}
# Problem members that a context key must not overwrite.
_RESERVED = {"type", "title", "status", "detail", "code", "instance", "errors"}


class FieldError(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    in_: str | None = Field(alias="in", description="body, query, path or header; null when the service found it")
    field: str = Field(description="JSON path of the value, e.g. trade.energyPerIntervalWh or trades[2].nonce")
    pointer: str | None = Field(default=None, description="RFC 6901 pointer into the body, e.g. #/trade/nonce")
    detail: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details; further members carry the error's context."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[TYPE_BASE + "gate_closed"])
    title: str
    status: int
    detail: str
    code: str = Field(description="stable machine-readable code; `type` ends with it")
    instance: str | None = None
    errors: list[FieldError] | None = None


def status_for(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def problem_for(exc: errors.LedgerError, instance: str | None = None) -> dict[str, Any]:
    """The problem document of a ledger error (used for whole responses and batch items alike)."""
    status = status_for(exc)
    if status >= 500:
        if isinstance(exc, errors.ChainError) and exc.retryable:
            return _problem(
                status, "chain_unavailable", "the blockchain node is unavailable; try again later", instance
            )
        if isinstance(exc, errors.ChainError):
            return _problem(status, "chain_error", "the blockchain node answered with an unexpected error", instance)
        return _problem(status, "internal_error", "the server failed to handle this request", instance)
    context = dict(exc.context)
    field = context.pop("field", None)
    body = _problem(status, exc.code, exc.message, instance)
    for key, value in context.items():
        name = camel(key)
        body["current" + name[:1].upper() + name[1:] if name in _RESERVED else name] = json_safe(value)
    if field:
        body["field"] = camel(field)
        body["errors"] = [{"in": None, "field": camel(field), "pointer": None, "detail": exc.message, "type": exc.code}]
    return body


def validation_problem(
    pydantic_errors: Sequence[Mapping[str, Any]], prefix: Sequence[str | int] = (), instance: str | None = None
) -> dict[str, Any]:
    """A 422 `validation_error` naming each bad value by its JSON path in the request."""
    field_errors = [_field_error(error, prefix) for error in pydantic_errors]
    names = ", ".join(dict.fromkeys(e["field"] for e in field_errors))
    plural = "value is" if len(field_errors) == 1 else "values are"
    body = _problem(422, "validation_error", f"{len(field_errors)} {plural} not valid: {names}", instance)
    body["errors"] = field_errors
    return body


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for problems (app.py files them under application/problem+json)."""
    return {status: {"model": Problem, "description": f"Problem ({status})"} for status in statuses}


# What the edge may answer before an operation runs (rate limit, body checks, token check), in
# every operation's documented responses: name -> (status, description, applies to the operation).
_EDGE_ANSWERS: tuple[tuple[int, str, Callable[[Mapping[str, Any]], bool]], ...] = (
    (429, "rate_limited: too many requests from this client or token", lambda _: True),
    (
        401,
        "a token that is not valid (token_required, invalid_token, token_expired, token_revoked)",
        lambda op: "security" in op,
    ),
    (400, "body_not_utf8 or json_too_deep: a body refused before it is parsed", lambda op: "requestBody" in op),
    (413, "content_too_large: a body beyond the service's cap", lambda op: "requestBody" in op),
)


def document_edge_answers(openapi: dict[str, Any]) -> None:
    """Adds, in place, the problems the edge answers to every operation that may get them."""
    problem = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path in openapi.get("paths", {}).values():
        for operation in path.values():
            answers = operation.setdefault("responses", {})
            for status, description, applies in _EDGE_ANSWERS:
                if applies(operation):
                    answers.setdefault(str(status), {"description": description, "content": problem})


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.LedgerError, _ledger_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)


def response(body: dict[str, Any], headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], headers=dict(headers or {}), media_type=MEDIA_TYPE)


# --- handlers ---------------------------------------------------------------------------------


async def _ledger_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.LedgerError)
    if status_for(exc) >= 500:
        log.error("%s %s failed: %s (%s)", request.method, request.url.path, exc.code, exc, exc_info=exc)
    return ledger_error_response(exc, request.url.path)


def ledger_error_response(exc: errors.LedgerError, instance: str | None) -> JSONResponse:
    """The answer to a ledger error, with the headers its kind calls for."""
    body = problem_for(exc, instance)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.Unauthenticated):
        # RFC 6750: no error code when no token came; invalid_token for a bad, expired or revoked one.
        given = type(exc) is not errors.Unauthenticated
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if given else "Bearer"
    if isinstance(exc, errors.ChainError) and exc.retryable:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response(body, headers)


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return response(validation_problem(exc.errors(), instance=request.url.path))


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else _reason(exc.status_code)
    return response(http_problem(exc.status_code, detail, request.url.path), exc.headers)


def http_problem(status: int, detail: str, instance: str | None, code: str | None = None) -> dict[str, Any]:
    """A problem for an HTTP-level refusal (no such route, wrong method, body too large, too
    many requests), from a middleware or the router."""
    return _problem(status, code or _HTTP_CODES.get(status, f"http_{status}"), detail, instance)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
    return response(_problem(500, "internal_error", "the server failed to handle this request", request.url.path))


# --- helpers ----------------------------------------------------------------------------------


def _problem(status: int, code: str, detail: str, instance: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": _TITLES.get(code, code.replace("_", " ").capitalize()),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance is not None:
        body["instance"] = instance
    return body


def _field_error(error: Mapping[str, Any], prefix: Sequence[str | int]) -> dict[str, Any]:
    loc = list(error.get("loc", ()))
    where = str(loc.pop(0)) if loc and loc[0] in ("body", "query", "path", "header", "cookie") else "body"
    if error.get("type") == "json_invalid":
        loc = []  # the position of the syntax error, not a field
    path = [*prefix, *loc]
    field = _json_path(path) or where
    pointer = "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path) if where == "body" else None
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if error.get("type") == "json_invalid" and isinstance(error.get("ctx"), Mapping):
        message = f"{message}: {error['ctx'].get('error', '')}".rstrip(": ")
    return {"in": where, "field": field, "pointer": pointer, "detail": message, "type": str(error.get("type", ""))}


def _json_path(path: Sequence[Any]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def json_safe(value: Any) -> Any:
    """Context values as JSON: ints stay ints, bytes become 0x hex, enums their value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {camel(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)
