"""The application factory: settings in, a ready FastAPI app out."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import sniffio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from proxy.admission import Admission
from proxy.admission.budgets.headers import RATE_LIMIT_HEADERS
from proxy.drain import AbortOnShutdown
from proxy.errors import ClientDisconnected, ErrorShape, ProxyError, RequestError, error_body
from proxy.fake_upstream import FakeUpstream
from proxy.hedging import HedgeBudget
from proxy.ids import request_id_in
from proxy.logs import protect_logs
from proxy.observers import Observers, StreamObserver
from proxy.observers.log import StreamLog
from proxy.observers.metrics import PrometheusMetrics, create_metrics
from proxy.observers.tracing import create_tracer
from proxy.requests import request_id_of
from proxy.responses import SERVER_SEND, error_response
from proxy.resumable import ResumableStreams
from proxy.routes import chat, completions, messages, operations, responses_api, stream, usage
from proxy.routes.chat_page import add_chat_page
from proxy.services import Services
from proxy.settings import Settings
from proxy.upstream import UpstreamHTTP
from proxy.upstreams import build_upstreams

logger = logging.getLogger("proxy")


def create_app(settings: Settings) -> FastAPI:
    metrics = create_metrics(settings)
    # Every stream's observers, in order; a new one is registered here.
    observers: list[StreamObserver] = [StreamLog()]
    if metrics is not None:
        observers.append(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # anyio (under Starlette and FastAPI) asks sniffio which library runs, and sniffio
        # looks up the current task each time unless told: this thread's loop is asyncio's
        # for its whole life.
        sniffio.thread_local.name = "asyncio"
        async with AsyncExitStack() as stack:
            # Made here, not with the app: an app that never serves (the parent of several
            # workers) starts no export thread. Closed last: every stream's spans are flushed.
            tracer = create_tracer(settings)
            if tracer is not None:
                stack.push_async_callback(tracer.aclose)
            traced = observers if tracer is None else [*observers, tracer]
            app.state.services = await _start_services(stack, settings, metrics, traced)
            # Everything made so far lives as long as the process: out of the collector's
            # sight, each full collection no longer walks it (docs/performance.md, GC).
            gc.freeze()
            yield

    app = ProxyApp(
        title="llm-stream-proxy",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    protect_logs()
    for routes in (
        stream.router,
        chat.router,
        completions.router,
        responses_api.router,
        messages.router,
        operations.router,
        usage.router,
    ):
        app.include_router(routes)
    if metrics is not None:
        endpoint = operations.metrics_endpoint(metrics)
        app.add_api_route("/metrics", endpoint, methods=["GET"], include_in_schema=False)
    if settings.chat_page:
        add_chat_page(app)
    if settings.cors_origin_list:
        _allow_origins(app, settings.cors_origin_list)
    # Outermost: a request the server cancels at the end of its shutdown grace is aborted.
    app.add_middleware(AbortOnShutdown)
    app.add_exception_handler(ProxyError, _proxy_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    return app


def _allow_origins(app: FastAPI, origins: tuple[str, ...]) -> None:
    """CORS for browser frontends on other sites. Pure ASGI: it adds headers to the response
    start and never touches the body."""
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=[
            "authorization",
            "content-type",
            "x-api-key",
            "x-request-id",
            "last-event-id",  # an SSE client resuming (issue 13)
            *completions.OPENAI_SDK_HEADERS,
            *messages.ANTHROPIC_SDK_HEADERS,
        ],
        # What a page may read besides the safelisted headers: its request id, and a
        # budgeted key's limits (docs/budgets.md).
        expose_headers=["X-Request-ID", "Retry-After", *RATE_LIMIT_HEADERS],
        max_age=600,
    )


class ProxyApp(FastAPI):
    """FastAPI, with the server's own `send` in each request's scope for StreamResponse's
    deltas (proxy/responses.py SERVER_SEND), and the request's id, derived once there for
    every reader (proxy/ids.py)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[SERVER_SEND] = send
        if scope["type"] == "http":
            request_id_in(scope)
        await super().__call__(scope, receive, send)


async def _start_services(
    stack: AsyncExitStack,
    settings: Settings,
    metrics: PrometheusMetrics | None,
    observers: list[StreamObserver],
) -> Services:
    """Everything requests share, each closed by `stack` when the app stops."""
    fake_url = ""
    if any(not spec.urls for spec in settings.models):
        # Paced like a model, so `curl -N` against `make run` visibly streams.
        fake = FakeUpstream(token_delay=0.02)
        await fake.start()
        stack.push_async_callback(fake.aclose)
        fake_url = fake.url
        logger.warning(
            "no upstream configured (PROXY_UPSTREAM_URL): serving the built-in fake upstream at %s",
            fake_url,
        )
    health = None
    if metrics is not None:
        stack.callback(metrics.close)
        health = metrics.replica_health
    upstreams = build_upstreams(settings, fake_url, health)
    for upstream in upstreams.values():
        stack.callback(upstream.balancer.close)
    http = UpstreamHTTP(settings.timeouts.connect)
    stack.push_async_callback(http.aclose)
    admission = Admission(settings.admission)
    stack.push_async_callback(admission.aclose)
    resumable = ResumableStreams.from_policy(settings.resume_policy)
    if resumable is not None:
        stack.push_async_callback(resumable.aclose)
    if admission.keys.open:
        logger.warning("PROXY_API_KEYS is not set: the proxy is open to every client")
    hedges = HedgeBudget(settings.hedge_budget, time.monotonic)
    return Services(settings, upstreams, http, admission, Observers(observers), resumable, hedges)


async def _proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
    # Whoever refused the request logged it, and wrote its id on the error.
    rid = exc.request_id or request_id_of(request)
    if isinstance(exc, ClientDisconnected):
        return JSONResponse({}, status_code=exc.status_code)
    return error_response(exc, rid, _error_shape(request))


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    error = RequestError(str(exc.detail))
    error.status_code = exc.status_code
    error.error_type = "not_found" if exc.status_code == 404 else "http_error"
    return error_response(error, request_id_of(request), _error_shape(request))


# Each API's routes answer errors in that API's shape (SPEC §5c, §5i); the proxy's own else.
ERROR_SHAPES: dict[str, ErrorShape] = {
    **completions.ERROR_SHAPES,
    **responses_api.ERROR_SHAPES,
    **messages.ERROR_SHAPES,
}


def _error_shape(request: Request) -> ErrorShape:
    route = request.scope.get("route")
    return ERROR_SHAPES.get(getattr(route, "path", ""), error_body)


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker process (PROXY_WORKERS > 1): settings read afresh."""
    from proxy.logs import configure_logging
    from proxy.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)
