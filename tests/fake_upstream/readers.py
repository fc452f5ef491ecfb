"""Throwaway readers of each wire format, whole bodies in, events and text out, and the raw
HTTP/1.1 helpers the fake's tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from proxy.fake_upstream import FakeUpstream

TOKENS = 5  # the test fakes' reply length when a prompt does not say


def sse_payloads(body: bytes) -> list[bytes]:
    """The `data:` fields of an SSE body, with or without the space after the colon."""
    lines = body.split(b"\n")
    return [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]


def ndjson_payloads(body: bytes) -> list[bytes]:
    return [line for line in body.split(b"\n") if line]


def chat_request(prompt: str) -> dict[str, Any]:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]
    return {"model": "m", "stream": True, "messages": messages}


def openai_text(event: Any) -> str:
    if event == "[DONE]" or "error" in event:
        return ""
    choice = event["choices"][0]
    return str(choice["delta"].get("content", "") if "delta" in choice else choice["text"])


def ollama_text(event: Any) -> str:
    return str(event["message"]["content"]) if "message" in event else ""


def tgi_text(event: Any) -> str:
    token = event.get("token")
    return "" if token is None or token["special"] else str(token["text"])


def anthropic_text(event: Any) -> str:
    """Text deltas only: a call's `input_json_delta` and a thinking delta are not text."""
    if event.get("type") != "content_block_delta":
        return ""
    return str(event["delta"].get("text", ""))


@dataclass(frozen=True)
class Dialect:
    path: str
    content_type: str
    request: Callable[[str], dict[str, Any]]
    payloads: Callable[[bytes], list[bytes]]
    text_of: Callable[[Any], str]
    is_end: Callable[[Any], bool]

    def event(self, payload: bytes) -> Any:
        return "[DONE]" if payload == b"[DONE]" else orjson.loads(payload)

    def events(self, body: bytes) -> list[Any]:
        return [self.event(payload) for payload in self.payloads(body)]

    def read(self, body: bytes) -> tuple[str, bool]:
        """The text of a reply, and whether it ended with the dialect's end marker."""
        events = self.events(body)
        text = "".join(map(self.text_of, events))
        return text, bool(events) and self.is_end(events[-1])


DIALECTS = {
    "openai": Dialect(
        "/v1/chat/completions",
        "text/event-stream",
        chat_request,
        sse_payloads,
        openai_text,
        lambda event: event == "[DONE]",
    ),
    "openai-completions": Dialect(
        "/v1/completions",
        "text/event-stream",
        lambda prompt: {"model": "m", "stream": True, "prompt": prompt},
        sse_payloads,
        openai_text,
        lambda event: event == "[DONE]",
    ),
    "ollama": Dialect(
        "/api/chat",
        "application/x-ndjson",
        chat_request,
        ndjson_payloads,
        ollama_text,
        lambda event: event.get("done") is True,
    ),
    "tgi": Dialect(
        "/generate_stream",
        "text/event-stream",
        lambda prompt: {"inputs": prompt, "parameters": {"max_new_tokens": 1000}},
        sse_payloads,
        tgi_text,
        lambda event: event.get("generated_text") is not None,
    ),
    "anthropic": Dialect(
        "/v1/messages",
        "text/event-stream",
        chat_request,
        sse_payloads,
        anthropic_text,
        lambda event: event.get("type") == "message_stop",
    ),
}
each_dialect = pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())

CHAT = DIALECTS["openai"]


async def post(client: httpx.AsyncClient, dialect: Dialect, prompt: str) -> httpx.Response:
    return await client.post(dialect.path, json=dialect.request(prompt))


def open_stream(
    client: httpx.AsyncClient, dialect: Dialect, prompt: str
) -> AbstractAsyncContextManager[httpx.Response]:
    return client.stream("POST", dialect.path, json=dialect.request(prompt))


async def raw_exchange(fake: FakeUpstream, request: bytes) -> bytes:
    """Everything a raw socket gets back for request, until the fake closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
    writer.write(request)
    try:
        return await reader.read(-1)
    finally:
        writer.close()


def raw_post(path: str, body: Any, *, close: bool = False) -> bytes:
    content = orjson.dumps(body)
    connection = b"Connection: close\r\n" if close else b""
    return b"POST %b HTTP/1.1\r\nHost: fake\r\nContent-Length: %d\r\n%b\r\n%b" % (
        path.encode(),
        len(content),
        connection,
        content,
    )


def dechunk(data: bytes) -> tuple[list[int], bytes, bytes]:
    """Chunk sizes, the body, and what follows the terminating chunk."""
    sizes: list[int] = []
    body = b""
    while True:
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return sizes, body, data.removeprefix(b"\r\n")
        sizes.append(size)
        body += data[:size]
        assert data[size : size + 2] == b"\r\n"
        data = data[size + 2 :]


def without_head(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]
