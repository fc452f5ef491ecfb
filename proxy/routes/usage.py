"""GET /v1/usage: the calling key's own budgets, window by window (docs/budgets.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from proxy.authentication import authenticate
from proxy.errors import answering_as
from proxy.requests import request_id_of
from proxy.services import services_of

router = APIRouter()


@router.get("/v1/usage")
async def key_usage(
    request: Request, client: Annotated[str | None, Depends(authenticate)]
) -> JSONResponse:
    """`{"key": name, "windows": [...]}`; no windows for a key without budgets."""
    services = services_of(request)
    budgets = services.admission.budgets
    if client is None or budgets.limits(client) is None:
        return JSONResponse({"key": client, "windows": []})
    with answering_as(request_id_of(request)):
        windows, headers = await budgets.usage(client, services.default_upstream.spec)
    return JSONResponse({"key": client, "windows": windows}, headers=dict(headers))
