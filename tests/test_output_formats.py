"""Issue 13 over real sockets: POST /v1/stream as SSE and NDJSON, chosen by Accept."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from proxy.fake_upstream import reply_text
from tests.servers import FakeUpstreamServer, ProxyProcess, ProxyServer
from tests.test_formats import sse_events
from tests.test_models import MODELS, models_proxy  # noqa: F401  (fixture)

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
# The fake counts the prompt as 3 tokens; TGI's stream counts generated tokens only.
PROMPT_TOKENS = {"chat": 3, "legacy": 3, "llama": 3, "hf": None, "claude": 3}


async def post_accepting(
    proxy: ProxyServer, accept: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        return await client.post("/v1/stream", json=body, headers={"Accept": accept, **headers})


def ndjson_events(body: bytes) -> list[dict[str, Any]]:
    assert body.endswith(b"\n")
    return [orjson.loads(line) for line in body.split(b"\n")[:-1]]


def events_of(accept: str, body: bytes) -> list[dict[str, Any]]:
    """Either format as one list of {"event", "id", "data"}, the SSE shape."""
    if accept == SSE:
        return sse_events(body)
    events = []
    for line in ndjson_events(body):
        event = line.pop("event")
        offset = line.pop("offset", None)
        events.append({"event": event, "id": None if offset is None else str(offset), "data": line})
    return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["data"]["text"] for e in events if e["event"] == "delta")


@pytest.mark.parametrize("accept", [SSE, NDJSON])
@pytest.mark.parametrize("model", MODELS)
async def test_every_dialect_gives_the_exact_text_then_done(
    models_proxy: ProxyServer,  # noqa: F811
    marker: str,
    model: str,
    accept: str,
) -> None:
    prompt = f"{marker} @text=tricky @tokens=40"  # the whole vocabulary: emoji, CJK, CR/LF, U+2028
    response = await post_accepting(models_proxy, accept, {"model": model, "prompt": prompt})
    assert response.status_code == 200
    events = events_of(accept, response.content)
    expected = reply_text(prompt, 40)
    assert text_of(events) == expected
    offsets = [int(e["id"]) for e in events if e["event"] == "delta"]
    assert offsets == sorted(offsets)
    assert offsets[-1] == len(expected)
    done = events[-1]
    assert done["event"] == "done"
    assert done["data"] == {  # every dialect's own word for it, normalized
        "finish_reason": "stop",
        "usage": {"prompt_tokens": PROMPT_TOKENS[model], "completion_tokens": 40},
    }
    assert [e["event"] for e in events].count("done") == 1


@pytest.mark.parametrize("accept", [SSE, NDJSON])
async def test_done_says_null_usage_when_the_upstream_reports_none(
    proxy: ProxyServer, marker: str, accept: str
) -> None:
    response = await post_accepting(proxy, accept, {"prompt": f"{marker} @usage=0"})
    done = events_of(accept, response.content)[-1]
    assert done["event"] == "done"
    assert done["data"] == {"finish_reason": "stop", "usage": None}


@pytest.mark.parametrize(("accept", "content_type"), [(SSE, SSE), (NDJSON, NDJSON)])
async def test_framed_formats_have_the_stream_headers(
    proxy: ProxyServer, marker: str, accept: str, content_type: str
) -> None:
    response = await post_accepting(proxy, accept, {"prompt": marker}, **{"X-Request-ID": marker})
    assert response.headers["content-type"].startswith(content_type)
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["cache-control"] == "no-cache, no-transform"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"] == marker


@pytest.mark.parametrize("accept", [SSE, NDJSON])
@pytest.mark.parametrize("fault", ["drop-mid", "hang-mid", "error-event", "malformed", "no-end"])
async def test_a_failure_after_the_commit_point_is_an_error_event_and_never_done(
    proxy: ProxyServer, marker: str, accept: str, fault: str
) -> None:
    prompt = f"{marker} @text=tricky @fault={fault} @after=3"
    response = await post_accepting(proxy, accept, {"prompt": prompt})  # ends cleanly
    assert response.status_code == 200
    events = events_of(accept, response.content)
    assert events[-1]["event"] == "error"
    error = events[-1]["data"]["error"]
    assert error["type"].startswith("upstream_")
    assert error["request_id"] == response.headers["x-request-id"]
    assert "done" not in [e["event"] for e in events]
    tokens = 12 if fault in ("no-end", "malformed") else 3
    assert reply_text(prompt, tokens).startswith(text_of(events))
    assert text_of(events)


@pytest.mark.parametrize("accept", ["text/html", "application/json", "*/*;q=0"])
async def test_an_unsupported_accept_is_406_before_anything_is_asked_upstream(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str, accept: str
) -> None:
    response = await post_accepting(proxy, accept, {"prompt": marker})
    assert response.status_code == 406
    assert response.json()["error"]["type"] == "not_acceptable"
    assert upstream.find(marker) == []


@pytest.mark.parametrize("accept", [SSE, NDJSON])
async def test_errors_before_the_commit_point_stay_http_errors(
    proxy: ProxyServer, marker: str, accept: str
) -> None:
    response = await post_accepting(
        proxy, accept, {"prompt": f"{marker} @text=tricky @fault=status @status=400"}
    )
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "upstream_error"


@pytest.mark.parametrize(
    ("accept", "ping"), [(SSE, b"\n: ping\n\n"), (NDJSON, b'{"event":"ping"}\n')]
)
async def test_a_waiting_stream_sends_keepalives(
    start_proxy: Callable[..., ProxyServer], marker: str, accept: str, ping: bytes
) -> None:
    proxy = start_proxy(sse_keepalive=0.05, idle_timeout=5)
    response = await post_accepting(
        proxy, accept, {"prompt": f"{marker} @text=tricky @tokens=3 @delay=0.4"}
    )
    assert ping in response.content
    assert text_of(events_of(accept, response.content)) == reply_text(
        f"{marker} @text=tricky @tokens=3 @delay=0.4", 3
    )


@pytest.mark.parametrize("accept", [SSE, NDJSON])
async def test_client_disconnect_closes_upstream_within_100ms(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str, accept: str
) -> None:
    await leave_and_expect_upstream_closed(proxy.url, upstream, marker, {"Accept": accept})


async def leave_and_expect_upstream_closed(
    proxy_url: str, upstream: FakeUpstreamServer, marker: str, headers: dict[str, str]
) -> None:
    """A client reads the first chunk and leaves: the upstream is closed within 100 ms."""
    prompt = f"{marker} @text=tricky @tokens=1000 @delay=0.05"
    async with httpx.AsyncClient(base_url=proxy_url) as client:
        request = client.build_request(
            "POST", "/v1/stream", json={"prompt": prompt}, headers=headers
        )
        response = await client.send(request, stream=True)
        assert response.status_code == 200
        await anext(response.aiter_raw())
        closed_at = time.monotonic()
        await response.aclose()
    record = await upstream.wait_disconnected(marker)
    assert record.disconnected_at is not None
    assert record.disconnected_at - closed_at < 0.1


async def test_events_arrive_while_upstream_is_still_producing(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=8 @delay=0.1"
    async with (
        httpx.AsyncClient(base_url=proxy.url) as client,
        client.stream(
            "POST", "/v1/stream", json={"prompt": prompt}, headers={"Accept": SSE}
        ) as response,
    ):
        first = await anext(response.aiter_raw())
        assert b"event: delta" in first
        (record,) = upstream.find(marker)
        assert record.finished_at is None


async def test_at_shutdown_a_framed_stream_past_the_grace_is_aborted_and_logged(
    upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = ProxyProcess(PROXY_UPSTREAM_URL=upstream.url, PROXY_SHUTDOWN_GRACE="1")
    try:
        prompt = f"{marker} @text=tricky @tokens=1000 @delay=0.05"
        async with httpx.AsyncClient(timeout=30) as client:
            request = client.build_request(
                "POST", f"{proxy.url}/v1/stream", json={"prompt": prompt}, headers={"Accept": SSE}
            )
            response = await client.send(request, stream=True)
            chunks = response.aiter_raw()
            await anext(chunks)
            proxy.send_signal(signal.SIGTERM)
            with pytest.raises(httpx.RemoteProtocolError):  # never a clean end (SPEC §5b)
                async for _ in chunks:
                    pass
            await response.aclose()
        assert await asyncio.to_thread(proxy.wait, 6) == 0
        assert_one_stream_ended_by_shutdown(proxy)
    finally:
        proxy.close()


def assert_one_stream_ended_by_shutdown(proxy: ProxyProcess) -> None:
    """The process logged one stream, ended by the shutdown, and no traceback."""
    stream_lines = [line for line in proxy.lines if " stream " in line]
    assert len(stream_lines) == 1
    assert "outcome=shutdown" in stream_lines[0]
    assert not any("Traceback" in line for line in proxy.lines)
