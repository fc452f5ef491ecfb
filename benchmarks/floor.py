"""The bench's floor: the fake upstream's reply, paced the same, from the least a FastAPI
`yield` path operation can be (no upstream, no validation, no guards).

The bench runs every scenario against it too, under uvicorn with the proxy's settings, so
the table shows what FastAPI and uvicorn alone cost on the machine, next to what the proxy
costs: the part of the proxy's overhead that no proxy built on this stack can remove.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from proxy.fake_upstream import Directives, reply_tokens

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


async def read_prompt(request: Request) -> str:
    # Read before the response starts: a `yield` path operation's body runs after it.
    return str(orjson.loads(await request.body())["prompt"])


@app.post("/v1/stream", response_class=StreamingResponse)
async def stream(prompt: Annotated[str, Depends(read_prompt)]) -> AsyncIterator[bytes]:
    directives = Directives.parse(prompt, tokens=12, delay=0.0)
    for index, token in enumerate(reply_tokens(prompt, directives.tokens)):
        if directives.delay:
            await asyncio.sleep(directives.delay)
        elif index % 64 == 63:
            await asyncio.sleep(0)  # as the fake: a long burst must not hold the loop
        yield token.encode()
