"""The relaying floor (issue 32): the least a FastAPI `yield` path operation can do to relay
the fake upstream, as the proxy does, and answer the proxy's way (raw text).

A pydantic body (the prompt), the upstream request sent through the proxy's own transport
(`UpstreamHTTP`: one kept-alive connection per stream in flight, reused across streams, as the
proxy's), and each read of the upstream's SSE cut to its content and yielded: the events of
one read split on their blank lines, each `data:` JSON parsed and its first choice's content
kept. No guards, no timeouts, no watchdog, no record, no observers, no retries, no framing
choices, and the upstream is asked from inside the response (so an upstream error is a cut
stream, not a status). Its CPU, time to first byte and memory per stream are what any proxy
on this stack (FastAPI, uvicorn, this transport) costs on the same load: issue 32's targets
are measured against it.

    BENCH_UPSTREAM=127.0.0.1:9000 uvicorn benchmarks.relay_floor:app --loop uvloop
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from proxy.upstream import UpstreamHTTP

_URL = f"http://{os.environ.get('BENCH_UPSTREAM', '127.0.0.1:9000')}/v1/chat/completions"
_HEADERS = {"Content-Type": "application/json"}


class Body(BaseModel):
    prompt: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    upstream = app.state.upstream = UpstreamHTTP(connect_timeout=5.0)
    try:
        yield
    finally:
        await upstream.aclose()


app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)


def content_of(events: bytes) -> str:
    """The text in whole OpenAI chat events (`data: {...}` lines, blank-line separated)."""
    text = []
    for event in events.split(b"\n\n"):
        if event.startswith(b"data: {"):
            choices = orjson.loads(event[6:])["choices"]
            if choices:
                text.append(choices[0]["delta"].get("content") or "")
    return "".join(text)


@app.post("/v1/stream", response_class=StreamingResponse)
async def stream(body: Body, request: Request) -> AsyncIterator[bytes]:
    upstream: UpstreamHTTP = request.app.state.upstream
    message = {
        "model": "fake",
        "stream": True,
        "messages": [{"role": "user", "content": body.prompt}],
    }
    response = await upstream.send("POST", _URL, orjson.dumps(message), _HEADERS)
    partial = b""  # an event a read cut short: the next read ends it
    try:
        async for read in cast(httpx.AsyncByteStream, response.stream):
            whole, _, partial = (partial + read).rpartition(b"\n\n")
            if whole and (text := content_of(whole)):
                yield text.encode()
    finally:
        await response.aclose()
