"""The fake as an HTTP/1.1 server: clients leaving, keep-alive, pipelining, probes, uvloop.

Each test talks to its own fake over a real loopback socket, on the test's event loop (the
suite's shared fake runs on uvloop, in tests/servers.py; one test here runs on uvloop too).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import uvloop

from proxy.fake_upstream import (
    FakeUpstream,
    RecordingFakeUpstream,
    reply_text,
)
from tests.fake_upstream.readers import (
    CHAT,
    DIALECTS,
    TOKENS,
    dechunk,
    open_stream,
    post,
    raw_exchange,
    raw_post,
    without_head,
)


@pytest.mark.parametrize(
    ("prompt", "body_arrives"),
    [
        ("@fault=hang-before", False),
        ("@fault=hang-mid @after=1", True),
        ("@tokens=3 @delay=30", True),
        ("@tokens=2000000", True),  # while the fake writes as fast as it can
    ],
)
async def test_client_leaving_mid_reply_is_recorded(
    fake: RecordingFakeUpstream,
    client: httpx.AsyncClient,
    marker: str,
    prompt: str,
    body_arrives: bool,
) -> None:
    async with open_stream(client, CHAT, f"{marker} {prompt}") as response:
        assert response.status_code == 200
        if body_arrives:
            await anext(response.aiter_raw())
        # Leaving with the body unread: httpx closes the connection.
    record = await fake.wait_disconnected(marker, timeout=2)
    assert record.disconnected_at is not None
    assert record.finished_at is None


async def test_client_leaving_before_the_headers_is_recorded(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient, marker: str
) -> None:
    request = asyncio.create_task(post(client, CHAT, f"{marker} @fault=hang-headers"))
    await fake.wait_received(marker, timeout=2)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    record = await fake.wait_disconnected(marker, timeout=2)
    assert record.disconnected_at is not None
    assert record.finished_at is None


async def test_closing_after_a_complete_reply_is_not_a_disconnect(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient, marker: str
) -> None:
    await post(client, CHAT, marker)
    await client.aclose()
    (record,) = fake.find(marker)
    assert record.finished_at is not None
    assert record.disconnected_at is None


async def test_aclose_drops_open_connections() -> None:
    fake = FakeUpstream()
    await fake.start()
    async with (
        httpx.AsyncClient(base_url=fake.url) as client,
        open_stream(client, CHAT, "@fault=hang-before") as response,
    ):
        await fake.aclose()
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()


async def test_keeps_the_connection_alive(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient
) -> None:
    statuses = [
        (await post(client, CHAT, "one")).status_code,
        (await post(client, CHAT, "two @fault=status @status=502")).status_code,
        (await client.get("/v1/models")).status_code,
        (await post(client, CHAT, "three @fault=no-end")).status_code,
    ]
    assert statuses == [200, 502, 200, 200]
    assert fake.connections_accepted == 1


async def test_answers_pipelined_requests_in_order(fake: RecordingFakeUpstream) -> None:
    first = raw_post(CHAT.path, CHAT.request("first @text=tricky @delay=0.01"))
    second = raw_post(CHAT.path, CHAT.request("second @text=tricky"), close=True)
    response = await raw_exchange(fake, first + second)
    _, first_body, rest = dechunk(without_head(response))
    _, second_body, rest = dechunk(without_head(rest))
    assert CHAT.read(first_body) == (reply_text("first @text=tricky @delay=0.01", TOKENS), True)
    assert CHAT.read(second_body) == (reply_text("second @text=tricky", TOKENS), True)
    assert rest == b""


async def test_answers_probes(client: httpx.AsyncClient) -> None:
    models = await client.get("/v1/models")
    assert models.json() == {"object": "list", "data": [{"id": "fake"}]}
    assert (await client.get("/")).status_code == 404


async def test_rejects_unknown_paths_and_bodies_that_are_not_json(
    client: httpx.AsyncClient,
) -> None:
    unknown = await client.post("/v1/nope", json={})
    not_json = await client.post(CHAT.path, content=b"{", headers={"Content-Type": "text/plain"})
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/json"
    assert not_json.status_code == 400
    assert "error" in not_json.json()


async def test_rejects_a_malformed_http_request(fake: RecordingFakeUpstream) -> None:
    response = await raw_exchange(fake, b"NOT HTTP AT ALL\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")


def test_serves_every_dialect_on_uvloop() -> None:
    async def scenario() -> None:
        fake = RecordingFakeUpstream(tokens=TOKENS)
        await fake.start()
        try:
            async with httpx.AsyncClient(base_url=fake.url) as client:
                for dialect in DIALECTS.values():
                    prompt = "uv @text=tricky @split=7"
                    response = await post(client, dialect, prompt)
                    assert dialect.read(response.content) == (reply_text(prompt, 5), True)
                async with open_stream(client, CHAT, "uv-leaves @fault=hang-mid") as response:
                    await anext(response.aiter_raw())
            assert (await fake.wait_disconnected("uv-leaves", timeout=2)).disconnected_at
        finally:
            await fake.aclose()

    uvloop.run(scenario())
