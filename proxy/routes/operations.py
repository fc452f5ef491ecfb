"""What operators and clients ask of the proxy itself: health, readiness, models, metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from proxy.authentication import authenticate
from proxy.observers.metrics import PrometheusMetrics
from proxy.services import services_of
from proxy.upstreams import Upstream

router = APIRouter()

# OpenAI's `created` of a model: here, when the proxy started (its models are configured then).
STARTED: Final = int(time.time())


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    services = services_of(request)
    default = services.default_upstream
    timeout = min(services.settings.timeouts.connect, 2)
    if await default.reachable(services.http, timeout):
        return JSONResponse({"status": "ready", "model": default.spec.name})
    return JSONResponse({"status": "unavailable", "model": default.spec.name}, status_code=503)


@router.get("/v1/models")
async def list_models(
    request: Request, client: Annotated[str | None, Depends(authenticate)]
) -> JSONResponse:
    """OpenAI's model list (SPEC §5c), with the proxy's own `dialect` beside its fields; a
    budgeted key is told how its budget stands, as on every response."""
    services = services_of(request)
    headers = await services.admission.rate_limit_headers(client, services.default_upstream.spec)
    return JSONResponse(_model_list(services.upstreams), headers=dict(headers))


def _model_list(upstreams: Mapping[str, Upstream]) -> dict[str, object]:
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": STARTED,
                "owned_by": "llm-stream-proxy",
                "dialect": upstream.spec.dialect,
            }
            for name, upstream in upstreams.items()
        ],
    }


def metrics_endpoint(metrics: PrometheusMetrics) -> Callable[[Request], Awaitable[Response]]:
    """GET /metrics: unauthenticated, like /healthz (scrapers carry no client key)."""

    async def endpoint(request: Request) -> Response:
        body, content_type = metrics.exposition(request.headers.get("accept", ""))
        return Response(body, headers={"Content-Type": content_type})

    return endpoint
