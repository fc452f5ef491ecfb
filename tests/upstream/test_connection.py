"""One connection's exchanges (framing, streaming, back-pressure, failures), against scripted
HTTP servers on loopback sockets (the `serve` fixture)."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from proxy.upstream import MAX_RESPONSE_HEAD, ResponseHeadTooLarge, response_body
from tests.scripted import LAST_CHUNK, OK_HEAD, Serve, chunk, read_request
from tests.upstream.support import Turns, idle_connections


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


async def test_reads_of_a_bursty_body_leave_other_tasks_their_turn(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    # Megabytes already sent: most reads find their bytes waiting and never wait themselves.
    # Each still steps through the event loop, or a client that left would not be noticed
    # (the proxy's 100 ms cancellation on a bursty upstream) and other streams would stall.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + chunk(b"x" * 65_536) * 64 + LAST_CHUNK)
        await writer.drain()

    url = await serve(handler)
    seen: list[int] = []
    received = 0
    async with Turns() as turns, client.stream("POST", url + "/v1/x", content=b"{}") as response:
        async for data in response_body(response):
            seen.append(turns.count)
            received += len(data)
    assert received == 64 * 65_536
    assert len(seen) >= 16
    assert all(before < after for before, after in itertools.pairwise(seen))


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


def head_of(size: int, status: bytes = b"200 OK") -> bytes:
    """A response head of exactly `size` bytes, its last header padded to fit."""
    start, end = b"HTTP/1.1 " + status + b"\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("size", [MAX_RESPONSE_HEAD - 1, MAX_RESPONSE_HEAD])
async def test_a_response_head_within_the_bound_is_read(
    serve: Serve, client: httpx.AsyncClient, size: int
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(head_of(size, b"200 OK\r\nContent-Length: 5") + b"hello")
        await writer.drain()

    response = await client.post(await serve(handler) + "/", content=b"{}")
    assert (response.status_code, response.content) == (200, b"hello")


async def test_a_response_head_one_byte_over_the_bound_is_refused(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(head_of(MAX_RESPONSE_HEAD + 1, b"200 OK\r\nContent-Length: 5") + b"hello")
        await writer.drain()

    with pytest.raises(ResponseHeadTooLarge):
        await client.post(await serve(handler) + "/", content=b"{}")


async def test_a_response_head_fails_as_soon_as_it_passes_the_bound_and_closes_the_connection(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    # The head never ends: only a transport that counts as it reads can fail it, and with
    # the error of its own, not the read timeout.
    closed_by_us = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * MAX_RESPONSE_HEAD)
        await writer.drain()
        assert await reader.read() == b""
        closed_by_us.set()

    url = await serve(handler)
    with pytest.raises(ResponseHeadTooLarge, match=f"over {MAX_RESPONSE_HEAD} bytes"):
        await client.post(url + "/", content=b"{}")
    await asyncio.wait_for(closed_by_us.wait(), 5)
    assert idle_connections(client) == 0


async def test_one_huge_header_is_refused_without_reading_it_all(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    # What was tried on the proxy: one 64 MiB header. The transport stops reading at the bound;
    # what the upstream manages to send past it fits in the kernel's socket buffers.
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: ")
        piece = b"h" * 65_536
        for _piece in range(1024):
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
        writer.write(b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    url = await serve(handler)
    with pytest.raises(ResponseHeadTooLarge):
        await client.post(url + "/", content=b"{}")
    assert sent < 32 * 1024 * 1024


async def test_interim_heads_count_towards_the_bound(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    interim = head_of(MAX_RESPONSE_HEAD // 3, b"100 Continue")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(interim * 3 + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        await writer.drain()
        await reader.read()

    with pytest.raises(ResponseHeadTooLarge):
        await client.post(await serve(handler) + "/", content=b"{}")


async def test_a_small_head_read_together_with_a_large_body_is_not_counted_as_head(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    body = b"b" * (4 * MAX_RESPONSE_HEAD)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    response = await client.post(await serve(handler) + "/", content=b"{}")
    assert response.content == body
