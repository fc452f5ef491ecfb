"""The upstream transport against scripted HTTP servers on loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.upstream_transport import UpstreamTransport
from tests.scripted import (
    LAST_CHUNK,
    OK_HEAD,
    ScriptedServer,
    Serve,
    chunk,
    read_request,
)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=UpstreamTransport(), timeout=5) as http:
        yield http


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> None:
    await read_request(reader)
    writer.write(OK_HEAD + chunk(body) + LAST_CHUNK)
    await writer.drain()


async def test_body_chunks_arrive_while_the_upstream_is_still_sending(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    first_seen = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + chunk(b"first"))
        await first_seen.wait()  # the rest is only sent once the client has the first part
        writer.write(chunk(b"second") + LAST_CHUNK)
        await writer.drain()

    url = await serve(handler)
    async with client.stream("POST", url + "/v1/x", content=b"{}") as response:
        chunks = response.aiter_raw()
        assert await anext(chunks) == b"first"
        first_seen.set()
        assert [part async for part in chunks] == [b"second"]
    assert response.status_code == 200


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


async def test_a_reader_that_stops_holds_the_upstream_back(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    # The upstream could send 256 MiB at once; the reader takes one chunk and stops. What is
    # not read must stay with the upstream (TCP pushes back), not pile up in the transport.
    sent = 0
    finished = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(OK_HEAD)
        piece = chunk(b"x" * 65_536)
        for _piece in range(4096):
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
        finished.set()

    url = await serve(handler)
    async with client.stream("POST", url + "/", content=b"{}") as response:
        assert len(await anext(response.aiter_raw())) > 0
        settled = -1
        while sent != settled and not finished.is_set():  # until the upstream is blocked
            settled = sent
            await asyncio.sleep(0.2)
        assert not finished.is_set()
        # Kernel socket buffers on loopback hold a few MiB; the transport adds at most 256 KiB.
        assert sent < 32 * 1024 * 1024


async def test_a_body_larger_than_the_socket_buffers_is_sent_whole(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    body = bytes(range(256)) * 32_768  # 8 MiB: the transport must wait for the socket to drain
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        received.append(await reader.readexactly(len(body)))
        writer.write(OK_HEAD + LAST_CHUNK)
        await writer.drain()

    url = await serve(handler)
    response = await client.post(url + "/", content=body)
    assert response.status_code == 200
    assert received == [body]


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello",  # the body ends with the socket
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    ],
    ids=["content-length", "until-close", "after-100-continue"],
)
async def test_every_way_of_framing_a_body(
    serve: Serve, client: httpx.AsyncClient, reply: bytes
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()

    url = await serve(handler)
    response = await client.get(url + "/")
    assert (response.status_code, response.content) == (200, b"hello")


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


def idle_connections(client: httpx.AsyncClient) -> int:
    """Connections the transport keeps open for reuse."""
    transport = client._transport
    assert isinstance(transport, UpstreamTransport)
    return sum(len(idle) for idle in transport._idle.values())


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


async def test_closing_a_response_mid_body_closes_its_connection(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    upstream_saw_close = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + chunk(b"endless"))
        await writer.drain()
        assert await reader.read() == b""
        upstream_saw_close.set()

    url = await serve(handler)
    async with client.stream("POST", url + "/", content=b"{}") as response:
        assert await anext(response.aiter_raw()) == b"endless"
    await asyncio.wait_for(upstream_saw_close.wait(), 5)
    assert idle_connections(client) == 0


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (OK_HEAD + chunk(b"half"), httpx.ReadError),  # dropped mid-body
        (b"", httpx.RemoteProtocolError),  # closed unanswered, on a fresh connection
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", httpx.ReadError),
    ],
    ids=["dropped-mid-body", "unanswered", "not-http", "short-body"],
)
async def test_broken_answers_raise_httpx_errors(
    serve: Serve,
    client: httpx.AsyncClient,
    reply: bytes,
    error: type[httpx.HTTPError],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()

    url = await serve(handler)
    with pytest.raises(error):
        await client.post(url + "/", content=b"{}")


async def test_a_silent_upstream_is_a_read_timeout_when_one_is_set(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD)
        await reader.read()

    url = await serve(handler)
    with pytest.raises(httpx.ReadTimeout):
        await client.post(url + "/", content=b"{}", timeout=httpx.Timeout(5, read=0.2))


async def test_refused_connection_is_a_connect_error(client: httpx.AsyncClient) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await client.post(f"http://127.0.0.1:{port}/", content=b"{}")


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


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


async def test_a_second_answer_in_the_same_read_is_ignored_and_closes_the_connection(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n%d!" % n
            + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
        )
        await writer.drain()
        await reader.read()

    url = await serve(handler)
    assert (await client.post(url + "/", content=b"{}")).content == b"0!"
    assert (await client.post(url + "/", content=b"{}")).content == b"1!"


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
