"""The application factory: settings in, a ready FastAPI app out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from proxy.api import request_id as assign_request_id
from proxy.api import router
from proxy.balancer import Balancer
from proxy.dialects import get_dialect
from proxy.errors import ClientDisconnected, ProxyError, RequestError, error_response
from proxy.fake_upstream import FakeUpstream
from proxy.guards import Guards
from proxy.logs import protect_logs
from proxy.relay import Relay, StreamRecord, Upstream
from proxy.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    specs = settings.models()
    dialects = {spec.name: get_dialect(spec.dialect) for spec in specs}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            fake_url = ""
            if any(not spec.urls for spec in specs):
                fake = FakeUpstream()
                await fake.start()
                stack.push_async_callback(fake.aclose)
                fake_url = fake.url
                logging.getLogger("proxy").warning(
                    "no upstream configured (PROXY_UPSTREAM_URL): serving the built-in fake "
                    "upstream at %s",
                    fake_url,
                )
            app.state.upstreams = {
                spec.name: Upstream(
                    spec,
                    dialects[spec.name],
                    Balancer(spec.urls or (fake_url,), settings.replica_cooldown),
                )
                for spec in specs
            }
            client = await stack.enter_async_context(upstream_client(settings))
            app.state.relay = Relay(client, settings)
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
    protect_logs()
    app.include_router(router)
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
    app.add_exception_handler(ProxyError, _proxy_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    return app


def upstream_client(settings: Settings) -> httpx.AsyncClient:
    """One client per process, sized for thousands of long streams.

    httpx's defaults (100 connections, 5 s pool wait, per-read timeouts) are wrong here: the
    relay bounds connects, first tokens and idle gaps itself, and the proxy's own concurrency
    cap bounds connections.
    """
    connections = settings.max_concurrent_streams + 16
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=settings.connect_timeout,
            read=None,
            write=settings.connect_timeout,
            pool=settings.connect_timeout,
        ),
        limits=httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=30,
        ),
        # Compressed streams would have to be inflated before parsing; plain is what LLM
        # servers send anyway.
        headers={"Accept-Encoding": "identity"},
        # Upstreams are configured explicitly; ambient HTTP(S)_PROXY must not reroute them.
        trust_env=False,
    )


def _request_id(request: Request) -> str:
    existing: str | None = getattr(request.state, "request_id", None)
    return existing or assign_request_id(request)


async def _proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
    request_id = _request_id(request)
    if isinstance(exc, RequestError):
        # Upstream failures were logged by the relay; refusals are logged here.
        StreamRecord(
            request_id=request_id,
            model=getattr(request.state, "model", None) or "-",
            client=getattr(request.state, "client", None),
            status=exc.status_code,
            outcome="rejected",
            error=exc.message,
        ).emit()
    if isinstance(exc, ClientDisconnected):
        return JSONResponse({}, status_code=exc.status_code)
    return error_response(exc, request_id)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    error = RequestError(str(exc.detail))
    error.status_code = exc.status_code
    error.error_type = "not_found" if exc.status_code == 404 else "http_error"
    return error_response(error, _request_id(request))
