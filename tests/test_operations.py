"""Health, readiness, models, logging and secrets, over real sockets."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from proxy.fake_upstream import reply_text
from proxy.logs import JSONFormatter
from tests.servers import FakeUpstreamServer, ProxyServer

SECRET = "sk-upstream-SECRET-1"  # the key the shared `proxy` fixture is configured with


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every log record of the process, formatted as the proxy's JSON lines."""
    lines: list[str] = []
    formatter = JSONFormatter()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    handler = Collect(level=logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(previous)


async def test_healthz(proxy: ProxyServer) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200


async def test_readyz_is_200_with_a_reachable_upstream(proxy: ProxyServer) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200


async def test_readyz_is_503_when_the_upstream_is_unreachable(
    start_proxy: Callable[..., ProxyServer],
) -> None:
    proxy = start_proxy(upstream_url="http://127.0.0.1:9")
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503


async def test_models_lists_the_configured_model(proxy: ProxyServer) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.get("/v1/models")
    (listed,) = response.json()["data"]
    assert listed == {
        "id": "default",
        "object": "model",
        "created": listed["created"],
        "owned_by": "llm-stream-proxy",
        "dialect": "openai",
    }


async def test_upstream_key_reaches_upstream_and_no_response_or_log(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str, log_lines: list[str]
) -> None:
    prompts = [
        marker,
        f"{marker} @fault=status @status=401",
        f"{marker} @fault=drop-mid @after=2",
        f"{marker} @fault=error-event @after=0",
    ]
    responses = []
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        for prompt in prompts:
            async with client.stream("POST", "/v1/stream", json={"prompt": prompt}) as response:
                body = b""
                try:
                    async for chunk in response.aiter_raw():
                        body += chunk
                except httpx.RemoteProtocolError:
                    pass
                responses.append((response, body))
        responses.append(((await client.get("/v1/models")), b""))
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in upstream.find(marker))
    for response, body in responses:
        assert SECRET not in str(response.headers)
        assert SECRET.encode() not in body
    assert log_lines
    assert not [line for line in log_lines if SECRET in line]


async def test_one_log_line_per_stream(
    proxy: ProxyServer, marker: str, log_lines: list[str]
) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(
            "/v1/stream", json={"prompt": "private words"}, headers={"X-Request-ID": marker}
        )
        await client.post(
            "/v1/stream", json={"prompt": ""}, headers={"X-Request-ID": "r-" + marker}
        )
    assert response.status_code == 200
    lines = [orjson.loads(line) for line in log_lines]
    streams = [line for line in lines if line["logger"] == "proxy.stream" and marker in str(line)]
    assert len(streams) == 2, streams
    completed, rejected = sorted(streams, key=lambda line: line["status"])
    assert completed["outcome"] == "completed"
    assert completed["request_id"] == marker
    assert completed["model"] == "default"
    assert completed["bytes"] == len(response.content)
    assert completed["ttfb_ms"] > 0
    assert completed["duration_ms"] >= completed["ttfb_ms"]
    assert rejected["outcome"] == "rejected"
    assert rejected["status"] == 422
    assert not [line for line in log_lines if "private words" in line]


async def test_without_upstream_url_the_built_in_fake_serves(
    start_proxy: Callable[..., ProxyServer],
) -> None:
    proxy = start_proxy(upstream_url=None)
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post("/v1/stream", json={"prompt": "Hello proxy"})
    assert response.status_code == 200
    assert response.text == reply_text("Hello proxy")
    assert "built-in fake upstream" in response.text
    assert "“Hello proxy”" in response.text
    assert "PROXY_UPSTREAM_URL" in response.text


async def test_aborted_stream_logs_one_line_and_no_traceback(
    proxy: ProxyServer, marker: str, log_lines: list[str]
) -> None:
    async with (
        httpx.AsyncClient(base_url=proxy.url) as client,
        client.stream(
            "POST", "/v1/stream", json={"prompt": f"{marker} @fault=drop-mid @after=2"}
        ) as response,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()
    records = [orjson.loads(line) for line in log_lines]
    streams = [r for r in records if r["logger"] == "proxy.stream"]
    assert [(r["status"], r["outcome"]) for r in streams] == [(200, "upstream_error")]
    assert streams[0]["error"] == "upstream connection dropped mid-stream"
    assert not [r for r in records if r["level"] == "error" or "exception" in r]


async def test_credentials_in_the_upstream_url_are_used_and_not_logged(
    start_proxy: Callable[..., ProxyServer],
    upstream: FakeUpstreamServer,
    log_lines: list[str],
    marker: str,
) -> None:
    with_credentials = upstream.url.replace("http://", "http://user:pw-SECRET@")
    proxy = start_proxy(upstream_url=with_credentials)
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post("/v1/stream", json={"prompt": f"{marker} hi"})
    assert response.status_code == 200
    # They are used, as HTTP Basic credentials...
    (seen,) = upstream.find(marker)
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(b"user:pw-SECRET").decode()
    # ... and never logged.
    streams = [orjson.loads(line) for line in log_lines if '"proxy.stream"' in line]
    assert streams[-1]["upstream"] == upstream.url
    assert not [line for line in log_lines if "pw-SECRET" in line]
