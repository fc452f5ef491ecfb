from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from proxy.fake_upstream import RecordingFakeUpstream
from tests.fake_upstream.readers import TOKENS


@pytest.fixture
async def fake() -> AsyncIterator[RecordingFakeUpstream]:
    server = RecordingFakeUpstream(tokens=TOKENS)
    await server.start()
    yield server
    await server.aclose()


@pytest.fixture
async def client(fake: RecordingFakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=5) as client:
        yield client
