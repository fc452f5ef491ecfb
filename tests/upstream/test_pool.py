"""Connections per origin: connecting, TLS, keep-alive reuse and what makes a connection unfit,
against scripted HTTP servers on loopback sockets (the `serve` fixture, or a ScriptedServer
with TLS)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from proxy.upstream import UpstreamTransport
from tests.scripted import LAST_CHUNK, OK_HEAD, ScriptedServer, Serve, chunk, read_request
from tests.upstream.support import answer, idle_connections, self_signed


async def test_kept_alive_connection_is_reused(serve: Serve, client: httpx.AsyncClient) -> None:
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        connections.append(n)
        for _request in range(3):
            await answer(reader, writer, b"ok")
        await reader.read()

    url = await serve(handler)
    for _request in range(3):
        assert (await client.post(url + "/", content=b"{}")).content == b"ok"
    assert connections == [0]


async def test_a_request_on_a_kept_alive_connection_closed_unanswered_is_not_sent_again(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    # The upstream reads the second request and closes without a word: it may have acted on
    # it, so the transport says so instead of sending it again (as httpcore and aiohttp do
    # for a POST); the relay decides whether a new attempt is safe.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await answer(reader, writer, b"one")
        await read_request(reader)

    url = await serve(handler)
    assert (await client.post(url + "/", content=b"{}")).content == b"one"
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(url + "/", content=b"{}")
    assert idle_connections(client) == 0


class TwoRequestsPerConnection:
    """Answers a connection's first request with its number, then records a second one."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.requests_on: list[int] = []  # the connection number of every request received

    async def __call__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        self.writers.append(writer)
        for _request in range(2):
            await read_request(reader)
            self.requests_on.append(n)
            writer.write(OK_HEAD + chunk(b"%d" % n) + LAST_CHUNK)
            await writer.drain()


def close_while_idle(writer: asyncio.StreamWriter) -> None:
    # The FIN reaches our socket, but our event loop has not run since: only the socket
    # itself can tell.
    writer.transport.get_extra_info("socket").shutdown(socket.SHUT_WR)


def answer_no_request(writer: asyncio.StreamWriter) -> None:
    # Taken for the answer to the next request, it would be wrong.
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")


@pytest.mark.parametrize("disturb", [close_while_idle, answer_no_request])
async def test_a_connection_on_which_anything_arrived_while_idle_is_not_used(
    serve: Serve, client: httpx.AsyncClient, disturb: Callable[[asyncio.StreamWriter], None]
) -> None:
    upstream = TwoRequestsPerConnection()
    url = await serve(upstream)
    assert (await client.post(url + "/", content=b"{}")).content == b"0"
    disturb(upstream.writers[0])
    assert (await client.post(url + "/", content=b"{}")).content == b"1"
    assert upstream.requests_on == [0, 1]


async def test_stray_bytes_on_an_idle_connection_close_it(serve: Serve) -> None:
    closed_by_us = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await answer(reader, writer, b"ok")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        await writer.drain()
        assert await reader.read() == b""
        closed_by_us.set()

    url = await serve(handler)
    # Kept alive far longer than the test may take: only the stray bytes can close it.
    transport = UpstreamTransport(keepalive_expiry=600)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        assert (await client.post(url + "/", content=b"{}")).content == b"ok"
        await asyncio.wait_for(closed_by_us.wait(), 5)
        assert idle_connections(client) == 0


async def test_refused_connection_is_a_connect_error(client: httpx.AsyncClient) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await client.post(f"http://127.0.0.1:{port}/", content=b"{}")


async def test_https_upstream(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await answer(reader, writer, b"secure")

    server = ScriptedServer(handler)
    port = await server.start(server_tls)
    transport = UpstreamTransport(ssl_context=client_tls)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        response = await client.post(f"https://localhost:{port}/", content=b"{}")
        assert response.content == b"secure"
        with pytest.raises(httpx.ConnectError):  # not the name the certificate is for
            await client.post(f"https://127.0.0.1:{port}/", content=b"{}")
    await server.close()


async def test_a_kept_alive_tls_connection_is_reused(tmp_path: Path) -> None:
    # TLS sends records of its own (session tickets) that must not pass for stray bytes.
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        for _request in range(3):
            await answer(reader, writer, b"secure")
        await reader.read()

    server = ScriptedServer(handler)
    port = await server.start(server_tls)
    transport = UpstreamTransport(ssl_context=ssl.create_default_context(cafile=str(cert)))
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        for _request in range(3):
            response = await client.post(f"https://localhost:{port}/", content=b"{}")
            assert response.content == b"secure"
    await server.close()
    assert server.connections == 1


async def test_an_idle_connection_is_closed_when_its_keep_alive_expires(serve: Serve) -> None:
    closed_by_us = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await answer(reader, writer, b"ok")
        assert await reader.read() == b""
        closed_by_us.set()

    url = await serve(handler)
    transport = UpstreamTransport(keepalive_expiry=0.2)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        assert (await client.post(url + "/", content=b"{}")).content == b"ok"
        assert idle_connections(client) == 1
        await asyncio.wait_for(closed_by_us.wait(), 5)
        assert idle_connections(client) == 0


async def test_a_request_after_the_keep_alive_expiry_goes_on_a_new_connection(
    serve: Serve,
) -> None:
    upstream = TwoRequestsPerConnection()
    url = await serve(upstream)
    transport = UpstreamTransport(keepalive_expiry=0.1)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        assert (await client.post(url + "/", content=b"{}")).content == b"0"
        await asyncio.sleep(0.3)
        assert (await client.post(url + "/", content=b"{}")).content == b"1"
    assert upstream.requests_on == [0, 1]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "ws://127.0.0.1/"])
async def test_other_url_schemes_are_refused(client: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        await client.post(url, content=b"{}")
