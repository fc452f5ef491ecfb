"""SPEC §5d over real sockets: the spans a real OTLP/HTTP receiver gets from the proxy.

The proxy runs under uvicorn (in-process, and once as `python -m proxy serve` configured
only by OTEL_* variables), the fake upstream records the headers it was sent, and the
receiver decodes every export with opentelemetry-proto. Spans are awaited, never slept for.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.fake_upstream import reply_text
from proxy.observers.tracing_provider import SHUTDOWN_FLUSH
from proxy.settings import Settings
from proxy.tracing_settings import tracing_policy
from tests.otlp_receiver import CLIENT, ERROR, SERVER, UNSET, OTLPReceiver, ReceivedSpan
from tests.redis_server import free_port
from tests.servers import FakeUpstreamServer, ProxyProcess, ProxyServer, proxy_settings

CLIENT_KEY = "sk-client-TRACE-0123456789"
UPSTREAM_KEY = "sk-upstream-TRACE-SECRET-42"
MODEL = "gpt-trace"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    server = OTLPReceiver()
    yield server
    server.close()


def traced_settings(receiver: OTLPReceiver, upstream_url: str, **environment: str) -> Settings:
    """Settings as `python -m proxy serve` would read them with these OTEL_* variables."""
    environment = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "10",
        **environment,
    }
    return proxy_settings(
        upstream_url,
        tracing=tracing_policy(environment),
        upstream_api_key=UPSTREAM_KEY,
        upstream_model=MODEL,
        api_keys=CLIENT_KEY,
    )


@pytest.fixture(scope="module")
def traced(receiver: OTLPReceiver, upstream: FakeUpstreamServer) -> Iterator[ProxyServer]:
    server = ProxyServer(traced_settings(receiver, upstream.url))
    yield server
    server.close()


def new_request_id() -> str:
    return f"trace-{uuid.uuid4().hex[:16]}"


async def stream(
    proxy: ProxyServer, prompt: str, request_id: str, **headers: str
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        return await client.post(
            "/v1/stream",
            json={"prompt": prompt, "max_tokens": 64, "temperature": 0.5},
            headers={"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-ID": request_id} | headers,
        )


def split(spans: list[ReceivedSpan]) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The server span, and its attempt spans in the order they started."""
    (server,) = [span for span in spans if span.kind == SERVER]
    attempts = sorted((span for span in spans if span.kind == CLIENT), key=lambda s: s.start_ns)
    for attempt in attempts:
        assert attempt.trace_id == server.trace_id
        assert attempt.parent_span_id == server.span_id  # siblings under the server span
    return server, attempts


def named(traceparent: str) -> tuple[str, str]:
    """The trace and the span a sampled W3C traceparent names."""
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00"
    assert int(flags, 16) & 1, "not sampled"
    return trace_id, span_id


def ids(span: ReceivedSpan) -> tuple[str, str]:
    return span.trace_id, span.span_id


def assert_nothing_secret(receiver: OTLPReceiver, *texts: str) -> None:
    exported = b"".join(receiver.bodies)
    for text in (CLIENT_KEY, UPSTREAM_KEY, *texts):
        assert text.encode() not in exported


async def test_a_success_is_a_server_span_over_one_attempt_span(
    traced: ProxyServer, receiver: OTLPReceiver, upstream: FakeUpstreamServer, marker: str
) -> None:
    request_id = new_request_id()
    response = await stream(traced, f"Tell me about {marker}", request_id)
    assert response.status_code == 200
    server, (attempt,) = split(await receiver.trace_of(request_id))

    assert server.name == "POST /v1/stream"
    assert server.parent_span_id == ""
    assert server.status == UNSET
    assert server.resource["service.name"] == "llm-stream-proxy"
    attributes = server.attributes
    assert attributes["llm_proxy.outcome"] == "completed"
    assert attributes["llm_proxy.request_id"] == request_id
    assert attributes["llm_proxy.output_format"] == "text"
    assert attributes["llm_proxy.resumable"] is False
    assert attributes["http.response.status_code"] == 200
    assert attributes["llm_proxy.client"]  # the key's short id, never the key
    assert "error.type" not in attributes

    assert attempt.name == f"chat {MODEL}"
    assert attempt.status == UNSET
    attributes = attempt.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == MODEL
    assert attributes["gen_ai.request.max_tokens"] == 64
    assert attributes["gen_ai.request.temperature"] == 0.5
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] == 12
    assert 0 < attributes["gen_ai.response.time_to_first_chunk"] < 5
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == int(upstream.url.rsplit(":", 1)[1])
    # The attempt lasts until the stream's end, inside the server span.
    assert server.start_ns <= attempt.start_ns <= attempt.end_ns <= server.end_ns

    (received,) = upstream.find(marker)
    assert named(received.headers["traceparent"]) == ids(attempt)
    assert_nothing_secret(receiver, marker)


async def test_the_openai_route_is_traced_the_same_way(
    traced: ProxyServer, receiver: OTLPReceiver, upstream: FakeUpstreamServer, marker: str
) -> None:
    request_id = new_request_id()
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": marker}]}
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-ID": request_id}
    async with httpx.AsyncClient(base_url=traced.url, timeout=10) as client:
        response = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200
    server, (attempt,) = split(await receiver.trace_of(request_id))
    assert server.name == "POST /v1/chat/completions"
    assert attempt.name == f"chat {MODEL}"
    (received,) = upstream.find(marker)
    assert named(received.headers["traceparent"]) == ids(attempt)
    assert_nothing_secret(receiver, marker)


async def test_an_upstream_error_before_the_commit_point_fails_both_spans(
    traced: ProxyServer, receiver: OTLPReceiver, upstream: FakeUpstreamServer, marker: str
) -> None:
    request_id = new_request_id()
    response = await stream(traced, f"{marker} @fault=status @status=400", request_id)
    assert response.status_code == 502
    server, (attempt,) = split(await receiver.trace_of(request_id))

    assert attempt.status == ERROR
    assert attempt.attributes["error.type"] == "400"
    assert attempt.attributes["http.response.status_code"] == 400
    assert "gen_ai.response.time_to_first_chunk" not in attempt.attributes
    assert server.status == ERROR
    assert server.attributes["error.type"] == "upstream_error"
    assert server.attributes["llm_proxy.outcome"] == "upstream_error"
    assert server.attributes["http.response.status_code"] == 502
    (received,) = upstream.find(marker)
    assert named(received.headers["traceparent"]) == ids(attempt)
    # The upstream's error text (which may quote the request) stays in the log line.
    assert (server.status_message, attempt.status_message) == ("", "")
    assert_nothing_secret(receiver, "fake upstream error", marker)


async def test_a_retry_that_succeeds_is_two_sibling_attempt_spans(
    traced: ProxyServer, receiver: OTLPReceiver, upstream: FakeUpstreamServer, marker: str
) -> None:
    request_id = new_request_id()
    response = await stream(traced, f"{marker} @fault=status @status=503 @fail_times=1", request_id)
    assert response.status_code == 200
    server, (failed, succeeded) = split(await receiver.trace_of(request_id))

    assert failed.status == ERROR
    assert failed.attributes["error.type"] == "503"
    assert failed.end_ns <= succeeded.start_ns
    assert succeeded.status == UNSET
    assert succeeded.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert server.status == UNSET
    assert server.attributes["llm_proxy.attempts"] == 2
    # Each upstream request named its own attempt's span.
    sent = [named(request.headers["traceparent"]) for request in upstream.find(marker)]
    assert sent == [ids(failed), ids(succeeded)]


async def assert_both_failed(
    receiver: OTLPReceiver, request_id: str, error_type: str, outcome: str
) -> ReceivedSpan:
    """The server span (with this outcome) and its one attempt span both ended in ERROR
    with this error.type; the attempt span."""
    server, (attempt,) = split(await receiver.trace_of(request_id))
    assert server.attributes["llm_proxy.outcome"] == outcome
    for span in (server, attempt):
        assert span.status == ERROR
        assert span.attributes["error.type"] == error_type
    return attempt


async def test_an_abort_after_the_commit_point_fails_the_attempt_that_committed(
    traced: ProxyServer, receiver: OTLPReceiver, marker: str
) -> None:
    request_id = new_request_id()
    with pytest.raises(httpx.RemoteProtocolError):  # raw text aborts (SPEC §1)
        await stream(traced, f"{marker} @fault=drop-mid @after=3", request_id)
    attempt = await assert_both_failed(
        receiver, request_id, "upstream_protocol_error", "upstream_error"
    )
    assert "gen_ai.response.time_to_first_chunk" in attempt.attributes  # it had committed


async def test_a_client_that_leaves_ends_both_spans_as_client_disconnected(
    traced: ProxyServer, receiver: OTLPReceiver, upstream: FakeUpstreamServer, marker: str
) -> None:
    request_id = new_request_id()
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-ID": request_id}
    async with httpx.AsyncClient(base_url=traced.url, timeout=10) as client:
        prompt = f"{marker} @tokens=1000 @delay=0.05"
        async with client.stream(
            "POST", "/v1/stream", json={"prompt": prompt}, headers=headers
        ) as response:
            await anext(response.aiter_raw())
    await upstream.wait_disconnected(marker)
    await assert_both_failed(receiver, request_id, "client_disconnected", "client_disconnected")


async def test_a_client_that_leaves_before_the_first_token_ends_its_attempt_the_same_way(
    traced: ProxyServer, receiver: OTLPReceiver, upstream: FakeUpstreamServer, marker: str
) -> None:
    request_id = new_request_id()
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-ID": request_id}
    async with httpx.AsyncClient(base_url=traced.url, timeout=10) as client:
        request = client.build_request(
            "POST", "/v1/stream", json={"prompt": f"{marker} @fault=hang-before"}, headers=headers
        )
        sending = asyncio.create_task(client.send(request, stream=True))
        await upstream.wait_received(marker)  # the attempt is waiting for its first token
        sending.cancel()
    await upstream.wait_disconnected(marker)
    attempt = await assert_both_failed(
        receiver, request_id, "client_disconnected", "client_disconnected"
    )
    assert "gen_ai.response.time_to_first_chunk" not in attempt.attributes


async def test_an_incoming_traceparent_makes_the_server_span_its_child(
    traced: ProxyServer, receiver: OTLPReceiver, upstream: FakeUpstreamServer, marker: str
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    request_id = new_request_id()
    response = await stream(
        traced,
        marker,
        request_id,
        traceparent=f"00-{trace_id}-{parent_id}-01",
        tracestate="vendor=opaque",
    )
    assert response.status_code == 200
    server, (attempt,) = split(await receiver.trace_of(request_id))

    assert (server.trace_id, server.parent_span_id) == (trace_id, parent_id)
    (received,) = upstream.find(marker)
    assert named(received.headers["traceparent"]) == ids(attempt)
    assert received.headers["tracestate"] == "vendor=opaque"


async def test_a_refusal_is_a_server_span_of_its_own(
    traced: ProxyServer, receiver: OTLPReceiver
) -> None:
    request_id = new_request_id()
    async with httpx.AsyncClient(base_url=traced.url, timeout=10) as client:
        response = await client.post(
            "/v1/stream",
            json={"prompt": "hello"},
            headers={"Authorization": "Bearer sk-wrong-key", "X-Request-ID": request_id},
        )
    assert response.status_code == 401
    (server,) = await receiver.trace_of(request_id)
    assert server.kind == SERVER
    assert server.attributes["error.type"] == "unauthorized"
    assert server.attributes["http.response.status_code"] == 401
    assert server.status == UNSET  # the client's mistake (HTTP semantic conventions)
    assert_nothing_secret(receiver, "sk-wrong-key")


async def test_pending_spans_are_flushed_at_shutdown(
    receiver: OTLPReceiver, upstream: FakeUpstreamServer, marker: str
) -> None:
    # Batches wait an hour: only the shutdown's flush can export these spans.
    proxy = ProxyServer(traced_settings(receiver, upstream.url, OTEL_BSP_SCHEDULE_DELAY="3600000"))
    request_id = new_request_id()
    try:
        assert (await stream(proxy, marker, request_id)).status_code == 200
    finally:
        await asyncio.to_thread(proxy.close)
    spans = await receiver.trace_of(request_id, timeout=1)
    assert len(spans) == 2


async def test_an_unreachable_collector_never_holds_a_stream_up(
    upstream: FakeUpstreamServer, marker: str
) -> None:
    environment = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens
        "OTEL_BSP_SCHEDULE_DELAY": "1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "200",
    }
    proxy = ProxyServer(proxy_settings(upstream.url, tracing=tracing_policy(environment)))
    try:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            for _ in range(3):
                response = await client.post("/v1/stream", json={"prompt": marker})
                assert response.status_code == 200
                assert response.text == reply_text(marker, 12)
    finally:
        started = time.monotonic()
        await asyncio.to_thread(proxy.close)
    # The last flush gives up within the export timeout: the process is not held up.
    assert time.monotonic() - started < 5


async def test_a_collector_that_never_answers_holds_the_exit_at_most_the_flush_bound(
    upstream: FakeUpstreamServer, marker: str
) -> None:
    # It takes the connection and never answers: the export would wait its whole timeout
    # (60 s here), past the termination grace that follows the drain.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        proxy = ProxyProcess(
            PROXY_UPSTREAM_URL=upstream.url,
            PROXY_SHUTDOWN_GRACE="0",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}",
            OTEL_BSP_SCHEDULE_DELAY="60000",  # nothing goes before the shutdown's flush
            OTEL_EXPORTER_OTLP_TIMEOUT="60000",
        )
        try:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
                response = await client.post("/v1/stream", json={"prompt": marker})
            assert response.text == reply_text(marker, 12)
            started = time.monotonic()
            proxy.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proxy.wait, 30) == 0
            assert time.monotonic() - started < SHUTDOWN_FLUSH + 3
        finally:
            proxy.close()


async def test_tracing_off_exports_nothing_and_opens_no_connection(
    upstream: FakeUpstreamServer, marker: str
) -> None:
    receiver = OTLPReceiver()  # its own, so no other test's export is counted
    try:
        # OTEL_* without an endpoint, and an endpoint with the SDK disabled: both off.
        for environment in (
            {"OTEL_SERVICE_NAME": "proxy", "OTEL_BSP_SCHEDULE_DELAY": "1"},
            {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SDK_DISABLED": "true"},
        ):
            settings = proxy_settings(upstream.url, tracing=tracing_policy(environment))
            assert settings.tracing is None
            proxy = ProxyServer(settings)
            try:
                async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
                    response = await client.post("/v1/stream", json={"prompt": marker})
                assert response.status_code == 200
                assert "traceparent" not in upstream.find(marker)[-1].headers
            finally:
                await asyncio.to_thread(proxy.close)  # a provider would flush here
        assert receiver.connections == 0
    finally:
        receiver.close()


async def server_span_of_a_stream(
    proxy: ProxyProcess, receiver: OTLPReceiver, marker: str
) -> ReceivedSpan:
    """One stream through a proxy process, then the process stopped: its exported server span."""
    request_id = new_request_id()
    try:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            response = await client.post(
                "/v1/stream", json={"prompt": marker}, headers={"X-Request-ID": request_id}
            )
        assert response.status_code == 200
        server, _ = split(await receiver.trace_of(request_id))
    finally:
        proxy.close()
    return server


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_the_otel_environment_configures_a_proxy_process(
    receiver: OTLPReceiver, upstream: FakeUpstreamServer, marker: str, workers: str
) -> None:
    proxy = ProxyProcess(
        PROXY_WORKERS=workers,  # each worker reads the environment and exports its own spans
        PROXY_UPSTREAM_URL=upstream.url,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.url + "/custom/traces",
        OTEL_SERVICE_NAME="edge-proxy",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test,service.name=ignored",
        OTEL_BSP_SCHEDULE_DELAY="10",
    )
    server = await server_span_of_a_stream(proxy, receiver, marker)
    assert server.resource["service.name"] == "edge-proxy"
    assert server.resource["deployment.environment"] == "test"
    assert "/custom/traces" in receiver.paths


async def test_otel_variables_in_env_file_configure_it_as_proxy_ones_do(
    receiver: OTLPReceiver, upstream: FakeUpstreamServer, marker: str, tmp_path: Path
) -> None:
    # `make run` reads `.env` in the directory it starts in; the environment wins over it.
    (tmp_path / ".env").write_text(
        f"OTEL_EXPORTER_OTLP_ENDPOINT={receiver.url}\n"
        "OTEL_SERVICE_NAME=from-the-file\n"
        "OTEL_BSP_SCHEDULE_DELAY=10\n"
    )
    proxy = ProxyProcess(
        cwd=str(tmp_path), PROXY_UPSTREAM_URL=upstream.url, OTEL_SERVICE_NAME="from-the-env"
    )
    server = await server_span_of_a_stream(proxy, receiver, marker)
    assert server.resource["service.name"] == "from-the-env"


def test_a_bad_otel_value_stops_the_proxy_at_start_up(receiver: OTLPReceiver) -> None:
    with pytest.raises(RuntimeError, match="OTEL_TRACES_SAMPLER_ARG"):
        ProxyProcess(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_TRACES_SAMPLER="traceidratio",
            OTEL_TRACES_SAMPLER_ARG="often",
        )
