"""Issue 12's metrics over real sockets, read back with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from proxy.fake_upstream import prompt_tokens, reply_text
from proxy.settings import ModelEntry
from tests.servers import FakeUpstreamServer, ProxyProcess, ProxyServer
from tests.test_admission_routes import open_stream, stream_status
from tests.test_operations import log_lines  # noqa: F401  (fixture)


class Scrape:
    """One GET /metrics, parsed by prometheus-client's text parser."""

    def __init__(self, text: str) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples = [sample for family in self.families.values() for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum over every sample of `name` whose labels include `labels` (pids summed)."""
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def table(self, name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """The samples of `name` by the values of `labels`."""
        return {
            tuple(sample.labels[label] for label in labels): sample.value
            for sample in self.samples
            if sample.name == name
        }

    def labels(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


async def scrape(proxy: ProxyServer | ProxyProcess) -> Scrape:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


async def scrape_when(
    proxy: ProxyServer | ProxyProcess, ready: Callable[[Scrape], bool], timeout: float = 15
) -> Scrape:
    """Scrape until `ready` holds: a stream's metrics land just after its response ends."""
    deadline = time.monotonic() + timeout
    while True:
        result = await scrape(proxy)
        if ready(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


def total_streams(result: Scrape) -> float:
    return result.value("llm_proxy_streams_total")


async def test_a_known_mix_of_streams_gives_exact_counts(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = start_proxy(
        api_keys="key-a,key-b,key-c,key-d",
        max_concurrent_streams=2,
        max_streams_per_key=1,
        max_body_bytes=1024,
        retries=0,
        first_token_timeout=1.0,
        idle_timeout=1.0,
        model_list=(
            ModelEntry(name="default", url=upstream.url),
            ModelEntry(name="dead", url="http://127.0.0.1:9"),
        ),
    )
    a, b, c, d = ({"Authorization": f"Bearer key-{k}"} for k in "abcd")
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:

        async def post(body: dict[str, object], **headers: str) -> int:
            response = await client.post("/v1/stream", json=body, headers={**d, **headers})
            return response.status_code

        async def aborted(prompt: str) -> None:
            with pytest.raises(httpx.RemoteProtocolError):
                await stream_status(proxy, prompt, **d)

        for i in range(3):
            assert await post({"prompt": f"{marker} completed {i}"}) == 200
        await aborted(f"{marker} @fault=drop-mid @after=2")
        await aborted(f"{marker} @fault=hang-mid @after=2")  # idle timeout
        # Refusals, one of each.
        bad_json = await client.post(
            "/v1/stream", content=b"{", headers={**d, "content-type": "application/json"}
        )
        assert bad_json.status_code == 400
        assert await post({"prompt": marker}, Authorization="") == 401
        assert await post({"prompt": marker, "model": "nope"}) == 404
        assert await post({"prompt": "x" * 2000}) == 413
        as_text = await client.post("/v1/stream", content=b"hi", headers=d)
        assert as_text.status_code == 415
        assert await post({"prompt": ""}) == 422
        # Upstream failures before the commit point.
        assert await post({"prompt": f"{marker} @fault=status @status=500"}) == 502
        assert await post({"prompt": f"{marker} @fault=status @status=429"}) == 429
        assert await post({"prompt": f"{marker} @fault=error-event @after=0"}) == 502
        assert await post({"prompt": marker, "model": "dead"}) == 503
        assert await post({"prompt": f"{marker} @fault=hang-before"}) == 504
        # The client leaving before the commit point.
        leaving = asyncio.create_task(post({"prompt": f"{marker} @fault=hang-before left"}))
        await upstream.wait_received(f"{marker} @fault=hang-before left")
        leaving.cancel()
        # Its slot is free once its stream is counted (the same step of the proxy's loop).
        await scrape_when(proxy, lambda scrape: total_streams(scrape) >= 17)
        # Two held streams: the per-key limit, the stream cap; then both clients leave.
        slow = f"{marker} @tokens=200 @delay=0.05"
        async with open_stream(proxy, f"{slow} a", **a):
            assert await post({"prompt": marker}, **a) == 429
            async with open_stream(proxy, f"{slow} b", **b):
                assert await post({"prompt": marker}, **c) == 503

    result = await scrape_when(proxy, lambda scrape: total_streams(scrape) >= 21)
    assert result.table("llm_proxy_streams_total", "model", "outcome") == {
        ("default", "completed"): 3,
        ("default", "upstream_error"): 4,  # drop-mid, 500, 429, error event
        ("dead", "upstream_error"): 1,
        ("default", "timeout"): 2,  # idle after the commit, first token before it
        ("default", "client_disconnected"): 3,  # one before the commit, two after
        ("-", "rejected"): 8,
    }
    assert result.table("llm_proxy_rejections_total", "status", "type") == {
        ("400", "invalid_json"): 1,
        ("401", "unauthorized"): 1,
        ("404", "model_not_found"): 1,
        ("413", "body_too_large"): 1,
        ("415", "unsupported_media_type"): 1,
        ("422", "validation_error"): 1,
        ("429", "rate_limited"): 1,
        ("503", "overloaded"): 1,
        ("502", "upstream_error"): 1,
        ("429", "upstream_rate_limited"): 1,
        ("502", "upstream_protocol_error"): 1,
        ("503", "upstream_unavailable"): 1,
        ("504", "upstream_timeout"): 1,
    }
    # Every stream past the commit point, once: 3 completed, 2 aborted, 2 left.
    for histogram in ("time_to_first_byte_seconds", "stream_duration_seconds"):
        assert result.value(f"llm_proxy_{histogram}_count", model="default") == 7
        assert result.value(f"llm_proxy_{histogram}_bucket", model="default", le="+Inf") == 7
    assert result.value("llm_proxy_streams_in_flight") == 0
    assert result.labels("llm_proxy_streams_in_flight", "model") == {"default", "dead"}
    live = upstream.url.removeprefix("http://")
    assert result.table("llm_proxy_upstream_attempts_total", "replica", "result") == {
        (live, "ok"): 7,
        (live, "status_5xx"): 1,
        (live, "status_4xx"): 1,
        (live, "protocol_error"): 1,
        ("127.0.0.1:9", "connect_error"): 1,
        (live, "timeout"): 1,
        (live, "cancelled"): 1,
    }
    assert result.value("llm_proxy_stream_bytes_total", model="default") > 0


async def test_exposition_parses_and_names_carry_the_prefix(
    proxy: ProxyServer, marker: str
) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        assert (await client.post("/v1/stream", json={"prompt": marker})).status_code == 200
    result = await scrape(proxy)
    assert result.families
    assert all(name.startswith("llm_proxy_") for name in result.families)
    assert result.value("llm_proxy_replica_up", model="default") == 1


async def test_openmetrics_when_the_scraper_asks_for_it(proxy: ProxyServer) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name for f in openmetrics_families(response.text)}
    assert {"llm_proxy_streams", "llm_proxy_time_to_first_byte_seconds"} <= families


async def test_metrics_need_no_client_key(start_proxy: Callable[..., ProxyServer]) -> None:
    proxy = start_proxy(api_keys="key-a")
    await scrape(proxy)


async def test_metrics_off_means_404_and_streams_still_work(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(metrics=False)
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.post("/v1/stream", json={"prompt": marker})).status_code == 200
        assert (await client.post("/v1/stream", json={"prompt": ""})).status_code == 422


async def test_a_failed_replica_is_down_until_its_cool_down_ends(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    # Long enough that a busy machine still scrapes within it.
    proxy = start_proxy(upstream_urls=f"http://127.0.0.1:9,{upstream.url}", replica_cooldown=4)
    first = await scrape(proxy)
    assert first.value("llm_proxy_replica_up", replica="127.0.0.1:9") == 1
    # The first stream tries the first replica first.
    assert (await stream_status(proxy, marker)).status_code == 200
    down = await scrape(proxy)
    assert down.value("llm_proxy_replica_up", replica="127.0.0.1:9") == 0
    live = upstream.url.removeprefix("http://")
    assert down.value("llm_proxy_replica_up", replica=live) == 1
    assert down.value("llm_proxy_upstream_attempts_total", result="connect_error") == 1
    back = await scrape_when(
        proxy, lambda s: s.value("llm_proxy_replica_up", replica="127.0.0.1:9") == 1
    )
    assert back.value("llm_proxy_replica_up", replica="127.0.0.1:9") == 1


def metrics_directories(temporary: Path) -> list[Path]:
    """The workers' shared metrics directories the proxy made under TMPDIR."""
    return list(temporary.glob("llm-stream-proxy-metrics-*"))


def metric_files(directory: Path) -> list[str]:
    return os.listdir(directory)


async def test_two_workers_one_scrape_covers_both(
    upstream: FakeUpstreamServer, marker: str, tmp_path: Path
) -> None:
    proxy = ProxyProcess(
        PROXY_UPSTREAM_URL=upstream.url,
        PROXY_WORKERS="2",
        TMPDIR=str(tmp_path),
    )
    try:
        (directory,) = metrics_directories(tmp_path)
        sent = 0
        # Until both workers have served streams (each worker's in-flight series has its pid):
        # a new connection goes to whichever worker accepts it first, so each batch opens its
        # own connections.
        for _ in range(20):
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
                batch = [
                    client.post("/v1/stream", json={"prompt": f"{marker}-{sent + i} @delay=0.01"})
                    for i in range(16)
                ]
                responses = await asyncio.gather(*batch)
            assert all(response.status_code == 200 for response in responses)
            sent += len(batch)
            if len((await scrape(proxy)).labels("llm_proxy_streams_in_flight", "pid")) == 2:
                break
        result = await scrape_when(proxy, lambda scrape: total_streams(scrape) >= sent)
        assert len(result.labels("llm_proxy_streams_in_flight", "pid")) == 2
        assert result.value("llm_proxy_streams_total", outcome="completed") == sent
        assert result.value("llm_proxy_time_to_first_byte_seconds_count") == sent
        assert result.value("llm_proxy_streams_in_flight") == 0
        assert metric_files(directory)
    finally:
        proxy.close()
    assert not metrics_directories(tmp_path)  # removed when the server exits


# --- token usage ---------------------------------------------------------------------------

DIALECTS = ["openai", "openai-completions", "ollama", "tgi", "anthropic"]


def stream_lines(logged: list[str], marker: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in logged if '"proxy.stream"' in line]
    return [line for line in lines if line.get("request_id") == marker]


async def usage_stream(
    proxy: ProxyServer, prompt: str, marker: str, logged: list[str]
) -> tuple[str, dict[str, Any], Scrape]:
    """The text of one stream, its log line, and a scrape taken after it."""
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post(
            "/v1/stream", json={"prompt": prompt}, headers={"X-Request-ID": marker}
        )
    assert response.status_code == 200
    result = await scrape_when(proxy, lambda scrape: total_streams(scrape) >= 1)
    (line,) = stream_lines(logged, marker)
    return response.text, line, result


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_the_upstreams_usage_reaches_the_log_line_and_tokens_total(
    start_proxy: Callable[..., ProxyServer],
    marker: str,
    log_lines: list[str],  # noqa: F811
    dialect: str,
) -> None:
    proxy = start_proxy(upstream_dialect=dialect)
    prompt = f"{marker} count my words @text=tricky"
    text, line, result = await usage_stream(proxy, prompt, marker, log_lines)
    assert text == reply_text(prompt, 12)  # unchanged by the usage events
    completion = 12
    prompt_count = None if dialect == "tgi" else prompt_tokens(prompt)  # TGI: generated only
    assert (line["prompt_tokens"], line["completion_tokens"]) == (prompt_count, completion)
    assert result.table("llm_proxy_tokens_total", "model", "kind") == {
        ("default", "completion"): completion,
        **({("default", "prompt"): prompt_count} if prompt_count else {}),
    }


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_no_usage_reported_gives_nulls_and_no_error(
    start_proxy: Callable[..., ProxyServer],
    marker: str,
    log_lines: list[str],  # noqa: F811
    dialect: str,
) -> None:
    proxy = start_proxy(upstream_dialect=dialect)
    prompt = f"{marker} @usage=0 @text=tricky"
    text, line, result = await usage_stream(proxy, prompt, marker, log_lines)
    assert text == reply_text(prompt, 12)
    assert line["outcome"] == "completed"
    assert (line["prompt_tokens"], line["completion_tokens"]) == (None, None)
    assert result.value("llm_proxy_tokens_total") == 0


@pytest.mark.parametrize("dialect", ["openai", "openai-completions", "tgi"])
async def test_a_model_can_refuse_to_be_asked_for_usage(
    start_proxy: Callable[..., ProxyServer],
    upstream: FakeUpstreamServer,
    marker: str,
    log_lines: list[str],  # noqa: F811
    dialect: str,
) -> None:
    proxy = start_proxy(upstream_dialect=dialect, upstream_stream_usage=False)
    _, line, _ = await usage_stream(proxy, marker, marker, log_lines)
    (received,) = upstream.find(marker)
    assert "stream_options" not in received.json
    assert "details" not in received.json.get("parameters", {})
    assert (line["prompt_tokens"], line["completion_tokens"]) == (None, None)
