"""The application factory: settings in, a ready FastAPI app out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import sniffio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from proxy.api import new_request_id, router
from proxy.balancer import Balancer
from proxy.chat_page import add_chat_page
from proxy.dialects import get_dialect
from proxy.drain import AbortOnShutdown
from proxy.errors import ClientDisconnected, ProxyError, RequestError, error_response
from proxy.fake_upstream import FakeUpstream
from proxy.guards import Guards
from proxy.logs import protect_logs
from proxy.metrics import Metrics, PrometheusMetrics, create_metrics
from proxy.relay import Relay, StreamRecord, Upstream
from proxy.settings import Settings
from proxy.upstream_http import UpstreamHTTP


def create_app(settings: Settings) -> FastAPI:
    specs = settings.models()
    dialects = {spec.name: get_dialect(spec.dialect) for spec in specs}
    metrics = create_metrics(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # anyio (FastAPI's checkpoint after every streamed chunk) asks sniffio which library
        # runs, and sniffio looks up the current task each time unless told: this thread's
        # loop is asyncio's for its whole life.
        sniffio.thread_local.name = "asyncio"
        async with AsyncExitStack() as stack:
            fake_url = ""
            if any(not spec.urls for spec in specs):
                # Paced like a model, so `curl -N` against `make run` visibly streams.
                fake = FakeUpstream(token_delay=0.02)
                await fake.start()
                stack.push_async_callback(fake.aclose)
                fake_url = fake.url
                logging.getLogger("proxy").warning(
                    "no upstream configured (PROXY_UPSTREAM_URL): serving the built-in fake "
                    "upstream at %s",
                    fake_url,
                )
            stack.callback(metrics.close)
            app.state.upstreams = {
                spec.name: Upstream(
                    spec,
                    dialects[spec.name],
                    watched_balancer(spec.name, spec.urls or (fake_url,), settings, metrics),
                )
                for spec in specs
            }
            for upstream in app.state.upstreams.values():
                stack.callback(upstream.balancer.close)
            http = UpstreamHTTP(settings)
            stack.push_async_callback(http.aclose)
            app.state.relay = Relay(http, settings, metrics)
            guards = Guards(settings)
            stack.push_async_callback(guards.aclose)
            app.state.guards = guards
            if guards.keys.open:
                logging.getLogger("proxy").warning(
                    "PROXY_API_KEYS is not set: the proxy is open to every client"
                )
            yield

    app = FastAPI(
        title="llm-stream-proxy",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    protect_logs()
    app.include_router(router)
    if settings.chat_page:
        add_chat_page(app)
    if isinstance(metrics, PrometheusMetrics):
        # Unauthenticated, like /healthz: scrapers carry no client key.
        app.add_api_route("/metrics", metrics.endpoint, methods=["GET"], include_in_schema=False)
    if settings.cors_origin_list:
        # Pure ASGI: it adds headers to the response start and never touches the body.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origin_list),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
            expose_headers=["X-Request-ID"],
            max_age=600,
        )
    # Outermost: a request the server cancels at the end of its shutdown grace is aborted.
    app.add_middleware(AbortOnShutdown)
    app.add_exception_handler(ProxyError, _proxy_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    return app


def _request_id(request: Request) -> str:
    existing: str | None = getattr(request.state, "request_id", None)
    return existing or new_request_id(request)


def watched_balancer(
    model: str, urls: tuple[str, ...], settings: Settings, metrics: Metrics
) -> Balancer:
    """A model's balancer, its replicas' health reported to the metrics from the start."""
    for url in urls:
        metrics.replica_up(model, url, True)
    return Balancer(
        urls, settings.replica_cooldown, lambda url, up: metrics.replica_up(model, url, up)
    )


async def _proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
    request_id = _request_id(request)
    metrics: Metrics = request.app.state.metrics
    metrics.rejected(exc)
    if isinstance(exc, RequestError):
        # Upstream failures were logged by the relay; refusals are logged here.
        record = StreamRecord(
            request_id=request_id,
            model=getattr(request.state, "model", None) or "-",
            client=getattr(request.state, "client", None),
            status=exc.status_code,
            outcome="rejected",
            error=exc.message,
        )
        record.emit()
        metrics.stream_refused(record)
    if isinstance(exc, ClientDisconnected):
        return JSONResponse({}, status_code=exc.status_code)
    return error_response(exc, request_id)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    error = RequestError(str(exc.detail))
    error.status_code = exc.status_code
    error.error_type = "not_found" if exc.status_code == 404 else "http_error"
    return error_response(error, _request_id(request))


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker process (PROXY_WORKERS > 1): settings read afresh."""
    from proxy.logs import configure_logging
    from proxy.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)
