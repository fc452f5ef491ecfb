"""StreamResponse (proxy/responses.py) as FastAPI hands it a `yield` path operation's items."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from types import AsyncGeneratorType
from typing import Any

import httpx
from fastapi import FastAPI

from proxy.formats import TEXT, Head, Item
from proxy.responses import StreamResponse
from proxy.values import Done


async def test_the_path_operations_own_generator_is_read_without_fastapis_wrapper() -> None:
    # FastAPI wraps a `yield` path operation's generator in one more that steps through the
    # event loop after every item; the proxy's reads already do (proxy/upstream/connection.py),
    # so StreamResponse reads the route's own generator. A FastAPI that changes the wrapper
    # is still served correctly, but slower: this says so.
    handed: list[AsyncGenerator[Item, None]] = []

    class Recording(StreamResponse):
        def __init__(self, content: AsyncGenerator[Item, None], **kwargs: Any) -> None:
            super().__init__(content, **kwargs)
            handed.append(self.items)

    app = FastAPI()

    @app.post("/text", response_class=Recording)
    async def text() -> AsyncIterator[Item]:
        yield Head(TEXT, "request-id", 15.0)
        yield "Hello, "
        yield "world"
        yield Done()

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        response = await client.post("/text")
    assert response.text == "Hello, world"
    (items,) = handed
    assert isinstance(items, AsyncGeneratorType)
    assert items.ag_code.co_name == "text"
