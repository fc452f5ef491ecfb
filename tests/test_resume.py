"""Issue 13's resumable streams over real sockets: drop, resume from the offset, any replica."""

from __future__ import annotations

import asyncio
import codecs
import signal
from collections.abc import Callable, Iterator

import httpx
import pytest

from proxy.fake_upstream import reply_text
from tests.redis_server import RedisServer
from tests.servers import FakeUpstreamServer, ProxyProcess, ProxyServer
from tests.test_chat import chat_body
from tests.test_formats import sse_events
from tests.test_output_formats import (
    assert_one_stream_ended_by_shutdown,
    leave_and_expect_upstream_closed,
)

SSE = "text/event-stream"
KEYS = "key-alpha-SECRET,key-beta-SECRET"
ALPHA = {"Authorization": "Bearer key-alpha-SECRET"}
BETA = {"Authorization": "Bearer key-beta-SECRET"}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.kill()


async def drop_after(
    proxy_url: str, prompt: str, characters: int, headers: dict[str, str], path: str = "/v1/stream"
) -> str:
    """Start a stream, read at least `characters` characters of its raw text, then leave."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    text = ""
    async with (
        httpx.AsyncClient(base_url=proxy_url, timeout=10) as client,
        client.stream("POST", path, json={"prompt": prompt}, headers=headers) as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            text += decoder.decode(chunk)  # a character cut in two is not had yet
            if len(text) >= characters:
                break
    return text


async def resume(
    proxy_url: str, stream_id: str, offset: int, headers: dict[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy_url, timeout=10) as client:
        return await client.get(
            f"/v1/stream/{stream_id}", params={"offset": offset}, headers=headers or {}
        )


@pytest.fixture
def resume_proxy(start_proxy: Callable[..., ProxyServer]) -> ProxyServer:
    return start_proxy(resume=True, api_keys=KEYS)


async def test_a_dropped_client_resumes_from_its_offset_and_gets_exactly_the_rest(
    resume_proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=60 @delay=0.02"
    had = await drop_after(resume_proxy.url, prompt, 10, {**ALPHA, "X-Request-ID": marker})
    rest = await resume(resume_proxy.url, marker, len(had), ALPHA)
    assert rest.status_code == 200
    assert rest.headers["content-type"] == "text/plain; charset=utf-8"
    assert had + rest.text == reply_text(prompt, 60)
    (record,) = upstream.find(marker)
    assert record.finished_at is not None  # the generation completed...
    assert record.disconnected_at is None or record.disconnected_at >= record.finished_at


async def test_sse_resumes_after_last_event_id_with_the_same_numbering(
    resume_proxy: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=40 @delay=0.02"
    headers = {**ALPHA, "X-Request-ID": marker, "Accept": SSE}
    received = b""
    async with (
        httpx.AsyncClient(base_url=resume_proxy.url, timeout=10) as client,
        client.stream("POST", "/v1/stream", json={"prompt": prompt}, headers=headers) as response,
    ):
        async for chunk in response.aiter_raw():
            received += chunk
            if received.count(b"event: delta") >= 3 and received.endswith(b"\n\n"):
                break
    first = sse_events(received)
    last_id = first[-1]["id"]
    async with httpx.AsyncClient(base_url=resume_proxy.url, timeout=10) as client:
        rest = await client.get(
            f"/v1/stream/{marker}", headers={**ALPHA, "Accept": SSE, "Last-Event-ID": last_id}
        )
    assert rest.headers["content-type"].startswith(SSE)
    events = first + sse_events(rest.content)
    text = "".join(e["data"]["text"] for e in events if e["event"] == "delta")
    assert text == reply_text(prompt, 40)
    assert events[-1]["event"] == "done"
    assert int(events[-1]["id"]) == len(text)


async def test_another_client_key_gets_404_and_so_does_an_unknown_id(
    resume_proxy: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=5"
    async with httpx.AsyncClient(base_url=resume_proxy.url, timeout=10) as client:
        started = await client.post(
            "/v1/stream", json={"prompt": prompt}, headers={**ALPHA, "X-Request-ID": marker}
        )
    assert started.status_code == 200
    assert (await resume(resume_proxy.url, marker, 0, BETA)).status_code == 404
    assert (await resume(resume_proxy.url, marker + "x", 0, ALPHA)).status_code == 404
    assert (await resume(resume_proxy.url, "x" * 200, 0, ALPHA)).status_code == 404
    assert (await resume(resume_proxy.url, marker, 0)).status_code == 401
    mine = await resume(resume_proxy.url, marker, 0, ALPHA)
    assert mine.status_code == 200
    assert mine.text == reply_text(prompt, 5)


async def test_an_offset_past_the_end_is_refused(resume_proxy: ProxyServer, marker: str) -> None:
    async with httpx.AsyncClient(base_url=resume_proxy.url, timeout=10) as client:
        await client.post(
            "/v1/stream",
            json={"prompt": f"{marker} @text=tricky @tokens=3"},
            headers={**ALPHA, "X-Request-ID": marker},
        )
    assert (await resume(resume_proxy.url, marker, 10_000, ALPHA)).status_code == 422


async def test_a_failed_stream_resumes_into_its_failure(
    resume_proxy: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @fault=drop-mid @after=4"
    async with httpx.AsyncClient(base_url=resume_proxy.url, timeout=10) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(
                "/v1/stream", json={"prompt": prompt}, headers={**ALPHA, "X-Request-ID": marker}
            )
        replay = await client.get(f"/v1/stream/{marker}", headers={**ALPHA, "Accept": SSE})
    events = sse_events(replay.content)
    assert events[-1]["event"] == "error"
    assert "".join(e["data"]["text"] for e in events[:-1]) == reply_text(prompt, 4)


async def test_with_resume_on_a_stream_without_an_id_still_closes_upstream_when_left(
    resume_proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    await leave_and_expect_upstream_closed(resume_proxy.url, upstream, marker, ALPHA)


async def test_with_resume_off_a_client_leaving_closes_upstream_within_100ms(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = start_proxy()
    await leave_and_expect_upstream_closed(proxy.url, upstream, marker, {"X-Request-ID": marker})
    assert (await resume(proxy.url, marker, 0)).status_code == 404


# --- the AI SDK's resume endpoint --------------------------------------------------------


async def test_chat_resume_replays_the_whole_answer_and_is_204_once_it_is_over(
    resume_proxy: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=30 @delay=0.03"
    async with httpx.AsyncClient(base_url=resume_proxy.url, timeout=10) as client:
        async with client.stream(
            "POST", "/v1/chat", json=chat_body(marker, prompt), headers=ALPHA
        ) as response:
            assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            await anext(response.aiter_raw())
        replay = await client.get(f"/v1/chat/{marker}/stream", headers=ALPHA)
        assert replay.status_code == 200
        assert replay.headers["x-vercel-ai-ui-message-stream"] == "v1"
        parts = [event["data"] for event in sse_events(replay.content)]
        deltas = "".join(p["delta"] for p in parts if p != "[DONE]" and p["type"] == "text-delta")
        assert deltas == reply_text(prompt, 30)
        assert parts[0]["type"] == "start"
        assert parts[-1] == "[DONE]"
        over = await client.get(f"/v1/chat/{marker}/stream", headers=ALPHA)
        assert over.status_code == 204
        never = await client.get(f"/v1/chat/{marker}-never/stream", headers=ALPHA)
        assert never.status_code == 204
        too_long = await client.get(f"/v1/chat/{'x' * 200}/stream", headers=ALPHA)
        assert too_long.status_code == 204


# --- any replica, through Redis ----------------------------------------------------------


async def test_a_second_proxy_process_sharing_redis_serves_the_resume(
    upstream: FakeUpstreamServer, redis_server: RedisServer, marker: str
) -> None:
    environment = {
        "PROXY_UPSTREAM_URL": upstream.url,
        "PROXY_RESUME": "true",
        "PROXY_REDIS_URL": redis_server.url,
        "PROXY_API_KEYS": KEYS,
    }
    first, second = ProxyProcess(**environment), ProxyProcess(**environment)
    try:
        prompt = f"{marker} @text=tricky @tokens=60 @delay=0.02"
        had = await drop_after(first.url, prompt, 12, {**ALPHA, "X-Request-ID": marker})
        assert (await resume(second.url, marker, len(had), BETA)).status_code == 404
        rest = await resume(second.url, marker, len(had), ALPHA)
        assert rest.status_code == 200
        assert had + rest.text == reply_text(prompt, 60)
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("offset", ["-1", "abc", "²", "1" * 30])
async def test_a_malformed_offset_is_refused(
    resume_proxy: ProxyServer, marker: str, offset: str
) -> None:
    async with httpx.AsyncClient(base_url=resume_proxy.url, timeout=10) as client:
        response = await client.get(
            f"/v1/stream/{marker}", params={"offset": offset}, headers=ALPHA
        )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "validation_error"


async def test_at_shutdown_a_stream_outliving_its_client_is_ended_and_logged(
    upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = ProxyProcess(PROXY_UPSTREAM_URL=upstream.url, PROXY_RESUME="true")
    try:
        prompt = f"{marker} @text=tricky @tokens=1000 @delay=0.05"
        await drop_after(proxy.url, prompt, 5, {"X-Request-ID": marker})
        proxy.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proxy.wait, 10) == 0
        record = await upstream.wait_disconnected(marker)  # let go of, not left running
        assert record.finished_at is None
        assert_one_stream_ended_by_shutdown(proxy)
    finally:
        proxy.close()
