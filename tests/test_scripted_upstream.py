"""The proxy against scripted upstreams that misbehave at the byte level."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import Iterator

import httpx
import orjson
import pytest

from proxy.dialects import DIALECTS
from proxy.fake_upstream.formats import FORMATS
from tests.scripted import LAST_CHUNK, ScriptedServer, Serve, chunk, read_request
from tests.servers import ProxyProcess, ProxyServer, proxy_settings
from tests.test_operations import log_lines  # noqa: F401  (fixture)
from tests.test_stream import read_into

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def openai_body(text: str) -> bytes:
    delta = orjson.dumps({"choices": [{"delta": {"content": text}}]})
    return b"data: " + delta + b"\n\ndata: [DONE]\n\n"


@pytest.fixture
def proxies() -> Iterator[list[ProxyServer]]:
    started: list[ProxyServer] = []
    yield started
    for proxy in started:
        proxy.close()


def start(proxies: list[ProxyServer], upstream_url: str, **settings: object) -> ProxyServer:
    proxy = ProxyServer(proxy_settings(upstream_url, **settings))
    proxies.append(proxy)
    return proxy


async def stream(proxy: ProxyServer, prompt: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        return await client.post("/v1/stream", json={"prompt": prompt})


async def test_a_kept_alive_connection_closed_unanswered_costs_a_counted_attempt(
    serve: Serve,
    proxies: list[ProxyServer],
    log_lines: list[str],  # noqa: F811
) -> None:
    # The upstream answers one request per connection and then reads the next one and hangs
    # up: the proxy cannot know whether it acted on it, so it tries again as a new attempt
    # and says so in the stream's log line.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(openai_body(f"answer {n}")) + LAST_CHUNK)
        await writer.drain()
        await read_request(reader)

    proxy = start(proxies, await serve(handler))
    assert (await stream(proxy, "one")).text == "answer 0"
    assert (await stream(proxy, "two")).text == "answer 1"
    lines = [orjson.loads(line) for line in log_lines if '"proxy.stream"' in line]
    assert [(line["outcome"], line["attempts"]) for line in lines] == [
        ("completed", 1),
        ("completed", 2),
    ]


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
async def test_a_gzip_encoded_upstream_streams_exactly_and_incrementally(
    serve: Serve, proxies: list[ProxyServer], dialect: str
) -> None:
    # Some gateways compress although asked for identity; each event is flushed on its own.
    tokens = ["Hé", "llo", " wörld", " 🙂", "\u2028!"]
    first_seen = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        path = (await read_request(reader)).split(b" ")[1].decode()
        wire, total = FORMATS[path], len(tokens)
        gzip = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % wire.content_type
        )
        first = wire.preamble("m") + wire.token(0, tokens[0], "m", total)
        writer.write(chunk(gzip.compress(first) + gzip.flush(zlib.Z_SYNC_FLUSH)))
        await writer.drain()
        await first_seen.wait()  # the rest only once the client has the first delta
        rest = b"".join(wire.token(i, token, "m", total) for i, token in enumerate(tokens))
        rest = rest[len(wire.token(0, tokens[0], "m", total)) :]
        rest += wire.epilogue() + wire.end("m", "".join(tokens), total)
        writer.write(chunk(gzip.compress(rest) + gzip.flush()) + LAST_CHUNK)
        await writer.drain()

    proxy = start(proxies, await serve(handler), upstream_dialect=dialect)
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=10) as client,
        client.stream("POST", "/v1/stream", json={"prompt": "hi"}) as response,
    ):
        assert response.status_code == 200
        body = response.aiter_raw()
        first_delta = await anext(body)
        first_seen.set()
        rest_of_text = b"".join([data async for data in body])
    assert first_delta == tokens[0].encode()
    assert (first_delta + rest_of_text).decode() == "".join(tokens)


async def test_a_gzip_encoded_error_body_gives_its_message(
    serve: Serve, proxies: list[ProxyServer]
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        body = gzip.compress(orjson.dumps({"error": {"message": "model is napping"}}))
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()

    proxy = start(proxies, await serve(handler), retries=0)
    response = await stream(proxy, "hi")
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "upstream answered 400: model is napping"


def resident_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak so far) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


async def endless_event(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    """An SSE event that never ends: 10 MiB and more, until the proxy hangs up."""
    await read_request(reader)
    writer.write(SSE_HEAD + chunk(b"data: "))
    piece = chunk(b"x" * 65_536)
    for _piece in range(1600):  # 100 MiB at most
        writer.write(piece)
        await writer.drain()


async def test_an_endless_event_fails_the_stream_and_memory_stays_flat(serve: Serve) -> None:
    proxy = ProxyProcess(PROXY_UPSTREAM_URL=await serve(endless_event))
    try:
        before = resident_kib(proxy.pid, "VmRSS")
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(proxy.url + "/v1/stream", json={"prompt": "hi"})
        peak = resident_kib(proxy.pid, "VmHWM")
    finally:
        proxy.close()
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_protocol_error"
    assert "1048576 bytes" in response.json()["error"]["message"]
    assert peak - before < 50 * 1024, f"peak RSS grew by {(peak - before) // 1024} MiB"


@pytest.mark.parametrize("dialect", ["openai", "ollama"])
async def test_text_before_an_oversized_event_reaches_the_client_before_the_abort(
    serve: Serve, proxies: list[ProxyServer], dialect: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        path = (await read_request(reader)).split(b" ")[1].decode()
        wire = FORMATS[path]
        writer.write(SSE_HEAD + chunk(wire.preamble("m") + wire.token(0, "kept", "m", 2)))
        await writer.drain()
        oversized = wire.token(1, "y" * 8192, "m", 2)
        for offset in range(0, len(oversized), 1000):
            writer.write(chunk(oversized[offset : offset + 1000]))
            await writer.drain()
        await reader.read()

    proxy = start(proxies, await serve(handler), upstream_dialect=dialect, max_event_bytes=4096)
    received = bytearray()
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=10) as client,
        client.stream("POST", "/v1/stream", json={"prompt": "hi"}) as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # the abort: no chunked terminator
            await read_into(response, received)
    assert received == b"kept"


async def test_a_credential_outside_the_header_grammar_is_a_clear_error_not_a_retry(
    serve: Serve, proxies: list[ProxyServer]
) -> None:
    reached: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        reached.append(n)

    proxy = start(proxies, await serve(handler), upstream_api_key="sk-pasted-with-a-space ")
    response = await stream(proxy, "hi")
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "Authorization" in message
    assert "sk-pasted" not in message
    assert reached == []


async def test_a_huge_response_head_is_a_502_well_before_the_first_token_timeout() -> None:
    # One 64 MiB header, as tried: the proxy's memory grew by as much and the client waited
    # for the first-token timeout. Now the attempt fails at the head's bound, and is not
    # retried: another attempt would only get the same head.
    async def huge_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: ")
        piece = b"h" * 65_536
        for _piece in range(1024):
            writer.write(piece)
            await writer.drain()
        writer.write(b"\r\n" + SSE_HEAD.split(b"\r\n", 1)[1])
        await writer.drain()
        await reader.read()

    upstream = ScriptedServer(huge_head)
    port = await upstream.start()
    proxy = ProxyProcess(
        PROXY_UPSTREAM_URL=f"http://127.0.0.1:{port}", PROXY_FIRST_TOKEN_TIMEOUT="20"
    )
    try:
        before = resident_kib(proxy.pid, "VmRSS")
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(proxy.url + "/v1/stream", json={"prompt": "hi"})
        elapsed = time.monotonic() - started
        peak = resident_kib(proxy.pid, "VmHWM")
    finally:
        proxy.close()
        await upstream.close()
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_protocol_error"
    assert "response head" in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert elapsed < 10, f"answered after {elapsed:.1f} s"
    assert upstream.connections == 1
    assert peak - before < 32 * 1024, f"peak RSS grew by {(peak - before) // 1024} MiB"
