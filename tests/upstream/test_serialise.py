"""What goes upstream, byte for byte, and what never does, as seen by scripted HTTP servers on
loopback sockets (the `serve` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from proxy.upstream import UpstreamTransport
from tests.scripted import LAST_CHUNK, OK_HEAD, Serve, read_request
from tests.upstream.support import answer


async def test_request_line_headers_and_body_reach_the_upstream(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        seen.append(await reader.readexactly(len(b'{"a": 1}')))
        writer.write(OK_HEAD + LAST_CHUNK)
        await writer.drain()

    url = await serve(handler)
    response = await client.post(
        url + "/v1/chat?x=1", content=b'{"a": 1}', headers={"Authorization": "Bearer k"}
    )
    assert response.status_code == 200
    head = seen[0].decode()
    assert head.startswith("POST /v1/chat?x=1 HTTP/1.1\r\n")
    assert "\r\nAuthorization: Bearer k\r\n" in head
    assert "\r\nContent-Length: 8\r\n" in head
    assert seen[1] == b'{"a": 1}'


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"X-Key", b"a\r\nX-Evil: 1"),
        (b"X-Key", b"a\nb"),
        (b"X-Key", b"nul\x00byte"),
        (b"X-Key", b"bell\x07"),
        (b"X-Key", b"del\x7f"),
        (b"X-Key", b" leading-space"),
        (b"X-Key", b"trailing-tab\t"),
        (b"X Key", b"space-in-name"),
        (b"X-Key:", b"colon-in-name"),
        (b"", b"empty-name"),
        (b"X-(Key)", b"separator-in-name"),
    ],
    ids=repr,
)
async def test_a_header_outside_the_field_grammar_is_never_sent(
    serve: Serve, client: httpx.AsyncClient, name: bytes, value: bytes
) -> None:
    reached: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        reached.append(n)
        await answer(reader, writer, b"ok")

    url = await serve(handler)
    with pytest.raises(httpx.LocalProtocolError):
        await client.post(url + "/", content=b"{}", headers=[(name, value)])
    assert reached == []


@pytest.mark.parametrize(
    "value", ["plain", "", "a b\tc", 'quoted "x"; q=0.5', "caf\u00e9", "x" * 8000]
)
async def test_headers_inside_the_field_grammar_are_sent_as_given(
    serve: Serve, client: httpx.AsyncClient, value: str
) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        seen.append(await read_request(reader))
        writer.write(OK_HEAD + LAST_CHUNK)
        await writer.drain()

    url = await serve(handler)
    await client.post(url + "/", content=b"{}", headers={"X-Value": value.encode()})
    assert b"\r\nX-Value: " + value.encode() + b"\r\n" in seen[0]


async def streamed_body() -> AsyncIterator[bytes]:
    yield b"{}"


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("HEAD", {}),
        ("POST", {"content": streamed_body()}),
        ("POST", {"content": b"{}", "headers": {"Expect": "100-continue"}}),
        ("POST", {"content": b"{}", "headers": {"Transfer-Encoding": "chunked"}}),
        ("CONNECT", {}),
    ],
    ids=["head", "streamed-body", "expect", "chunked-by-hand", "connect"],
)
async def test_requests_the_transport_cannot_frame_are_refused_before_sending(
    serve: Serve, method: str, options: dict[str, Any]
) -> None:
    # A HEAD answer has a length but no body, which httptools cannot be told; a streamed
    # body would go out without chunked framing; `Expect` waits for an interim answer.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        await writer.drain()
        await reader.read()

    url = await serve(handler)
    async with httpx.AsyncClient(transport=UpstreamTransport(), timeout=1) as client:
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.request(method, url + "/", **options)
