"""Upstream response bodies decoded per Content-Encoding: any split of the bytes in memory
(hypothesis), and what scripted HTTP servers on loopback sockets send (the `serve` fixture)."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import socket
import zlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import UpstreamProtocolError
from proxy.upstream import UpstreamHTTP, response_body
from tests.scripted import LAST_CHUNK, Serve, chunk, read_request
from tests.splits import cuts, split_at
from tests.upstream.support import Turns


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


def gzipped_in_two_members(data: bytes) -> bytes:
    middle = len(data) // 2
    return gzip.compress(data[:middle]) + gzip.compress(data[middle:])


def deflated(data: bytes) -> bytes:
    return zlib.compress(data)


def deflated_raw(data: bytes) -> bytes:  # "deflate" without its zlib wrapper
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzipped),
    "gzip-two-members": ("gzip", gzipped_in_two_members),
    "x-gzip": ("x-gzip", gzipped),
    "deflate": ("deflate", deflated),
    "deflate-raw": ("deflate", deflated_raw),
}


class Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


async def decode_pieces(encoding: str, pieces: list[bytes]) -> bytes:
    response = httpx.Response(200, headers={"Content-Encoding": encoding}, stream=Pieces(pieces))
    return b"".join([data async for data in response_body(response)])


# Text, and runs long enough that one compressed read inflates past a step's bound.
payloads = st.one_of(
    st.binary(max_size=3000),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=3), st.integers(0, 300_000)),
)


@given(st.sampled_from(sorted(ENCODERS)), payloads, cuts)
def test_any_split_of_an_encoded_body_decodes_to_the_same_bytes(
    name: str, payload: bytes, cut_points: list[int]
) -> None:
    encoding, encode = ENCODERS[name]
    pieces = split_at(encode(payload), cut_points)
    assert asyncio.run(decode_pieces(encoding, pieces)) == payload


@pytest.fixture
async def http() -> AsyncIterator[UpstreamHTTP]:
    upstream_http = UpstreamHTTP(connect_timeout=2.0)
    yield upstream_http
    await upstream_http.aclose()


def encoded_head(encoding: str) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
        % encoding.encode()
    )


async def body_from(serve: Serve, http: UpstreamHTTP, encoding: str, body: bytes) -> list[bytes]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(encoded_head(encoding) + chunk(body) + LAST_CHUNK)
        await writer.drain()

    response = await http.send("POST", await serve(handler), b"{}")
    try:
        return [data async for data in response_body(response)]
    finally:
        await response.aclose()


@pytest.mark.parametrize("name", sorted(ENCODERS))
async def test_an_encoded_body_from_the_upstream_is_decoded(
    serve: Serve, http: UpstreamHTTP, name: str
) -> None:
    encoding, encode = ENCODERS[name]
    text = "data: héllo wörld\n\n".encode() * 500
    assert b"".join(await body_from(serve, http, encoding, encode(text))) == text


@pytest.mark.parametrize("encoding", [None, "identity", "Identity, identity"])
async def test_a_plain_body_is_handed_over_untouched(
    serve: Serve, http: UpstreamHTTP, encoding: str | None
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n"
    if encoding:
        head += b"Content-Encoding: " + encoding.encode() + b"\r\n"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(head + b"\r\n\x1f\x8b not gzip")
        await writer.drain()

    response = await http.send("POST", await serve(handler), b"{}")
    assert [data async for data in response_body(response)] == [b"\x1f\x8b not gzip"]


async def test_a_bomb_is_inflated_a_bounded_step_at_a_time(
    serve: Serve, http: UpstreamHTTP
) -> None:
    size = 64 * 1024 * 1024  # about 64 KiB compressed
    pieces = await body_from(serve, http, "gzip", gzip.compress(bytes(size)))
    assert sum(map(len, pieces)) == size
    assert max(map(len, pieces)) <= 64 * 1024


async def test_a_gzip_body_is_decoded_as_it_arrives(serve: Serve, http: UpstreamHTTP) -> None:
    first_seen = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        first = compressor.compress(b"data: first\n\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
        writer.write(encoded_head("gzip") + chunk(first))
        await writer.drain()
        await first_seen.wait()  # the rest only once the client has the first event
        rest = compressor.compress(b"data: second\n\n") + compressor.flush()
        writer.write(chunk(rest) + LAST_CHUNK)
        await writer.drain()

    response = await http.send("POST", await serve(handler), b"{}")
    body = response_body(response)
    assert await anext(body) == b"data: first\n\n"
    first_seen.set()
    assert [data async for data in body] == [b"data: second\n\n"]


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(b"data: x\n\n" * 100)[:-12]),  # cut short
        ("gzip", b"\x1f\x8b\x08\x00 this is not deflate"),
        ("gzip", gzip.compress(b"data: x\n\n") + b"trailing junk"),
        ("deflate", zlib.compress(b"data: x\n\n") + b"trailing junk"),
        ("deflate", b"neither zlib nor raw deflate\xff\xff"),
    ],
    ids=["truncated", "garbage", "gzip-trailing-junk", "deflate-trailing-junk", "not-deflate"],
)
async def test_a_broken_encoded_body_is_an_upstream_protocol_error(
    serve: Serve, http: UpstreamHTTP, encoding: str, body: bytes
) -> None:
    with pytest.raises(UpstreamProtocolError, match=f"broken {encoding} body"):
        await body_from(serve, http, encoding, body)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br", "gzip, gzip"])
async def test_an_encoding_the_proxy_cannot_decode_is_refused_by_name(
    serve: Serve, http: UpstreamHTTP, encoding: str
) -> None:
    with pytest.raises(UpstreamProtocolError, match="cannot decode") as refused:
        await body_from(serve, http, encoding, b"whatever")
    assert repr(encoding) in refused.value.message


@pytest.mark.parametrize("name", sorted(ENCODERS))
async def test_an_encoded_body_sent_a_byte_at_a_time_is_decoded(
    serve: Serve, http: UpstreamHTTP, name: str
) -> None:
    encoding, encode = ENCODERS[name]
    text = "data: 世界 🙂\r\n\r\n".encode() * 20
    body = encode(text)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        writer.write(encoded_head(encoding))
        for index in range(len(body)):
            writer.write(chunk(body[index : index + 1]))
            await writer.drain()
        writer.write(LAST_CHUNK)
        await writer.drain()

    response = await http.send("POST", await serve(handler), b"{}")
    assert b"".join([data async for data in response_body(response)]) == text


async def test_inflating_what_one_read_left_leaves_other_tasks_their_turn() -> None:
    # One small read inflates to 64 steps of 64 KiB, none of which waits for the socket: each
    # still steps through the event loop, as the transport's reads do.
    body = gzip.compress(b"x" * (64 * 65_536))
    response = httpx.Response(
        200, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(body)
    )
    seen = []
    received = 0
    async with Turns() as turns:
        async for data in response_body(response):
            seen.append(turns.count)
            received += len(data)
    assert received == 64 * 65_536
    assert len(seen) == 64
    assert all(before < after for before, after in itertools.pairwise(seen))
