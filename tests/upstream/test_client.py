"""UpstreamHTTP: the request it builds from a URL and the proxy's headers, as a scripted HTTP
server on a loopback socket receives it (the `serve` fixture)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from proxy.upstream import UpstreamHTTP
from tests.scripted import LAST_CHUNK, OK_HEAD, Serve, read_request


@pytest.fixture
async def http() -> AsyncIterator[UpstreamHTTP]:
    upstream_http = UpstreamHTTP(connect_timeout=2.0)
    yield upstream_http
    await upstream_http.aclose()


async def test_user_info_in_the_url_is_sent_as_basic_credentials_and_identity_is_asked_for(
    serve: Serve, http: UpstreamHTTP
) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        seen.append(await read_request(reader))
        writer.write(OK_HEAD + LAST_CHUNK)
        await writer.drain()

    url = (await serve(handler)).replace("http://", "http://user:pw@")
    response = await http.send("POST", url + "/v1/chat", b"{}", {"X-Extra": "1"})
    await response.aclose()
    head = seen[0]
    assert head.startswith(b"POST /v1/chat HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Basic " + base64.b64encode(b"user:pw") + b"\r\n" in head
    assert b"\r\nAccept-Encoding: identity\r\n" in head
    assert b"\r\nX-Extra: 1\r\n" in head
    assert b"user:pw" not in head.split(b"\r\n")[0]


async def test_a_timeout_given_to_send_bounds_the_wait_for_the_head(
    serve: Serve, http: UpstreamHTTP
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        await reader.read()

    with pytest.raises(httpx.ReadTimeout):
        await http.send("GET", await serve(handler) + "/", timeout=0.2)
