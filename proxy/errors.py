"""Every failure the proxy reports, and its one mapping to HTTP.

    ProxyError
    ├── RequestError                 the client's request is refused (logged as "rejected")
    │   ├── InvalidJSON              400
    │   ├── UnsupportedParameter     400  (asks for what the proxy cannot relay: tools, images)
    │   ├── Unauthorized             401  WWW-Authenticate: Bearer
    │   ├── UnknownModel             404
    │   ├── NotFound                 404  (no stream to resume, or another client's)
    │   ├── NotAcceptable            406  (no output format matches Accept)
    │   ├── BodyTooLarge             413
    │   ├── UnsupportedMediaType     415
    │   ├── InvalidRequest           422
    │   ├── RateLimited              429  Retry-After
    │   │   └── BudgetExceeded       429  Retry-After, x-ratelimit-* (a key's budget is spent)
    │   └── Overloaded               503  Retry-After
    │       ├── BudgetUnavailable    503  (the budgets' Redis is down; fail closed)
    │       └── RedisUnavailable     503  Retry-After; an error ending after the commit
    │                                     (Redis failed or answered too late: redis_retry.py)
    ├── ShuttingDown                 503, or aborted after the commit (shutdown grace ran out)
    └── UpstreamError                the upstream failed us
        ├── UpstreamStatusError      502, or 429 + Retry-After when the upstream said 429
        ├── UpstreamUnavailable      503 (no upstream reachable: refused, reset, unresolvable)
        ├── UpstreamProtocolError    502 (unreadable stream, in-band error, no end marker)
        ├── UpstreamTimeout          504 (connect, first token); idle, total after the commit
        ├── OutputLimitReached       after the commit: output past the key's allowance
        ├── StreamLost               502 a resumed stream stopped without its end (issue 13)
        └── CompletionTooLarge       502 a `stream: false` answer over what is held in memory

Exceptions are raised where the failure happens; the JSON shapes (`error_body`, OpenAI's
`openai_error_body` and Anthropic's `anthropic_error_body` for their APIs' routes), the status
and the headers of
each live here alone, and `proxy.responses.error_response` is the one place they become a
response. The one that logs a refusal (a stream's session) writes its
request id on the error, so the response names the request the log line does.
Messages must never contain secrets: they are sent to clients and logged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any


class ProxyError(Exception):
    status_code: int = 500
    error_type: str = "internal_error"
    request_id: str | None = None
    param: str | None = None  # the request field at fault, where one is (OpenAI's `param`)
    # What the response tells beside the error: a budgeted key's x-ratelimit-* headers.
    extra_headers: tuple[tuple[str, str], ...] = ()

    def __init__(
        self, message: str, *, retry_after: float | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        if param is not None:
            self.param = param

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


@contextmanager
def answering_as(request_id: str) -> Iterator[None]:
    """Refusals raised here answer with this request id (the stream's session does this
    for the refusals it logs)."""
    try:
        yield
    except ProxyError as exc:
        exc.request_id = request_id
        raise


class RequestError(ProxyError):
    status_code = 400
    error_type = "invalid_request"


class InvalidJSON(RequestError):
    status_code = 400
    error_type = "invalid_json"


class UnsupportedParameter(RequestError):
    """A request field asks for what the proxy does not relay (it relays text): refused
    rather than silently dropped (SPEC §5c)."""

    status_code = 400
    error_type = "unsupported_parameter"


class Unauthorized(RequestError):
    status_code = 401
    error_type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class UnknownModel(RequestError):
    status_code = 404
    error_type = "model_not_found"
    param = "model"


class NotFound(RequestError):
    status_code = 404
    error_type = "not_found"


class NotAcceptable(RequestError):
    status_code = 406
    error_type = "not_acceptable"


class BodyTooLarge(RequestError):
    status_code = 413
    error_type = "body_too_large"


class UnsupportedMediaType(RequestError):
    status_code = 415
    error_type = "unsupported_media_type"


class InvalidRequest(RequestError):
    status_code = 422
    error_type = "validation_error"


class RateLimited(RequestError):
    status_code = 429
    error_type = "rate_limited"


class Overloaded(RequestError):
    status_code = 503
    error_type = "overloaded"


class BudgetExceeded(RateLimited):
    """A client key's token or spend budget has too little left (proxy/admission/budgets/):
    `window` names the one that refused; its x-ratelimit-* headers go with the answer."""

    error_type = "budget_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        window: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.window = window
        self.extra_headers = headers


class BudgetUnavailable(Overloaded):
    error_type = "budget_unavailable"


class RedisUnavailable(Overloaded):
    """A Redis command failed or did not answer in time; every Redis error of the proxy
    becomes this one (proxy/redis_retry.py `redis_call`), never a redis-py exception."""

    error_type = "redis_unavailable"


class UpstreamError(ProxyError):
    status_code = 502
    error_type = "upstream_error"
    # Worth another attempt before the commit point (SPEC §1): the next try may succeed.
    retryable: bool = False


class UpstreamStatusError(UpstreamError):
    def __init__(
        self, message: str, *, upstream_status: int, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.upstream_status = upstream_status
        self.retryable = upstream_status == 429 or upstream_status >= 500
        if upstream_status == 429:
            self.status_code = 429
            self.error_type = "upstream_rate_limited"

    def headers(self) -> dict[str, str]:
        return super().headers() if self.status_code == 429 else {}


class UpstreamUnavailable(UpstreamError):
    # SPEC §2: 502 is an upstream that answered badly; one that cannot be reached is 503.
    status_code = 503
    error_type = "upstream_unavailable"
    retryable = True


class UpstreamProtocolError(UpstreamError):
    error_type = "upstream_protocol_error"


class UpstreamClosedEarly(UpstreamProtocolError):
    """The upstream closed before a first delta: nothing was committed, so try again."""

    retryable = True


class UpstreamTimeout(UpstreamError):
    status_code = 504
    error_type = "upstream_timeout"


class OutputLimitReached(UpstreamError):
    """The upstream went on past the max tokens it was asked for, and so past the key's
    allowance: the proxy ends the stream there (proxy/admission/budgets/)."""

    error_type = "output_limit_reached"


class UpstreamConnectTimeout(UpstreamTimeout):
    retryable = True


class ShuttingDown(ProxyError):
    """PROXY_SHUTDOWN_GRACE ran out while the request was still open (proxy/drain.py)."""

    status_code = 503
    error_type = "shutting_down"


class StreamLost(UpstreamError):
    """A stream being resumed got no new text nor its end in time: its producer is gone."""

    error_type = "stream_lost"


ErrorBody = dict[str, dict[str, str]]


def error_body(exc: ProxyError, request_id: str) -> ErrorBody:
    """The JSON error of SPEC §2, also sent inside error events after the commit point."""
    return {"error": {"type": exc.error_type, "message": exc.message, "request_id": request_id}}


OpenAIErrorBody = dict[str, dict[str, str | None]]


def openai_error(status: int, code: str, message: str, param: str | None = None) -> OpenAIErrorBody:
    """OpenAI's error object (SPEC §5c): its SDKs raise their typed exception by the status,
    and show `message`; `code` is the proxy's own error type."""
    kind = _openai_type(status)
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error_body(exc: ProxyError, request_id: str = "") -> OpenAIErrorBody:
    return openai_error(exc.status_code, exc.error_type, exc.message, exc.param)


# Anthropic's error types by status, as its SDKs map them to their exceptions (SPEC §5i).
_ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
    504: "timeout_error",
}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error object: `{"type": "error", "error": {"type", "message"}}`."""
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_error_body(exc: ProxyError, request_id: str = "") -> dict[str, Any]:
    return {**anthropic_error(exc.status_code, exc.message), "request_id": request_id}


# How a route's API spells an error: (the error, the request's id) → the JSON body.
ErrorShape = Callable[[ProxyError, str], Mapping[str, Any]]


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


class CompletionTooLarge(UpstreamError):
    """A `stream: false` completion grew past what one request may hold (SPEC §5b: memory per
    stream is bounded); the whole answer is only ever sent at its end."""

    error_type = "completion_too_large"


class ClientDisconnected(ProxyError):
    """The client left before the commit point; nobody reads the answer (nginx's 499)."""

    status_code = 499
    error_type = "client_closed_request"
