from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from proxy.upstream import UpstreamTransport


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=UpstreamTransport(), timeout=5) as http:
        yield http
