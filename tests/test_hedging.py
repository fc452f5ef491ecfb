"""Hedged first token (issue 30, SPEC §5j) over real sockets, with two fake replicas: a slow
first attempt is overtaken by a hedge on the other replica and closed; nothing else changes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from proxy.fake_upstream import reply_text
from proxy.settings import ModelEntry
from tests.redis_server import free_port
from tests.servers import FakeUpstreamServer, ProxyServer
from tests.test_formats import sse_events
from tests.test_metrics import Scrape, scrape, scrape_when
from tests.test_output_formats import NDJSON, SSE, events_of

SLOW_START = 5.0  # far past every hedge and every test's own wait


@pytest.fixture(scope="module")
def slow() -> Iterator[FakeUpstreamServer]:
    server = FakeUpstreamServer(tokens=6, slow_start=SLOW_START)
    yield server
    server.close()


@pytest.fixture(scope="module")
def fast() -> Iterator[FakeUpstreamServer]:
    server = FakeUpstreamServer(tokens=6)
    yield server
    server.close()


def hedging_proxy(
    start_proxy: Callable[..., ProxyServer], *urls: str, hedge_after: Any = 0.2, **settings: Any
) -> ProxyServer:
    entry = ModelEntry(name="m", urls=urls, hedge_after=hedge_after)
    return start_proxy(model_list=(entry,), first_token_timeout=3.0, **settings)


async def post(
    proxy: ProxyServer, prompt: str, accept: str = "*/*", **headers: str
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        return await client.post(
            "/v1/stream", json={"prompt": prompt}, headers={"Accept": accept, **headers}
        )


def hedges(result: Scrape, outcome: str) -> float:
    return result.value("llm_proxy_hedges_total", result=outcome)


async def test_a_slow_first_replica_is_overtaken_and_closed(
    start_proxy: Callable[..., ProxyServer],
    slow: FakeUpstreamServer,
    fast: FakeUpstreamServer,
    marker: str,
) -> None:
    proxy = hedging_proxy(start_proxy, slow.url, fast.url)  # the first attempt goes to `slow`
    response = await post(proxy, f"{marker} @text=tricky")
    assert response.text == reply_text(f"{marker} @text=tricky", 6)
    # The loser's upstream sees its request closed, seconds before it would have answered.
    await slow.wait_disconnected(marker, timeout=2)
    assert len(fast.find(marker)) == 1
    result = await scrape_when(proxy, lambda s: hedges(s, "won") > 0)
    assert (hedges(result, "won"), hedges(result, "lost")) == (1, 0)
    assert result.value("llm_proxy_upstream_attempts_total", result="hedge_lost") == 1


async def test_a_fast_first_replica_is_never_hedged(
    start_proxy: Callable[..., ProxyServer], fast: FakeUpstreamServer, marker: str
) -> None:
    other = FakeUpstreamServer(tokens=6)
    try:
        proxy = hedging_proxy(start_proxy, fast.url, other.url)
        for number in range(4):
            response = await post(proxy, f"{marker}-{number}")
            assert response.text == reply_text(f"{marker}-{number}", 6)
        assert len(fast.find(marker)) + len(other.find(marker)) == 4
        assert hedges(await scrape(proxy), "won") + hedges(await scrape(proxy), "lost") == 0
    finally:
        other.close()


async def test_one_replica_means_no_hedge(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    lone = FakeUpstreamServer(tokens=3, slow_start=0.6)
    try:
        proxy = hedging_proxy(start_proxy, lone.url)
        response = await post(proxy, marker)
        assert response.text == reply_text(marker, 3)
        assert len(lone.find(marker)) == 1  # waited for, not raced against itself
    finally:
        lone.close()


async def test_the_budget_caps_hedges_under_concurrent_load(
    start_proxy: Callable[..., ProxyServer],
    slow: FakeUpstreamServer,
    fast: FakeUpstreamServer,
    marker: str,
) -> None:
    proxy = hedging_proxy(start_proxy, slow.url, fast.url, hedge_budget=0.1)
    prompts = [f"{marker}-{number}" for number in range(30)]
    async with httpx.AsyncClient(base_url=proxy.url, timeout=15) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/stream", json={"prompt": prompt}) for prompt in prompts)
        )
    result = await scrape_when(proxy, lambda s: s.value("llm_proxy_streams_total") >= 30)
    started = hedges(result, "won") + hedges(result, "lost")
    assert 1 <= started <= 3  # a tenth of the 30 requests of the last minute
    # Those the budget let race are whole; the rest waited on `slow` past the first-token
    # deadline, as they would have without hedging.
    whole = [r for r, p in zip(responses, prompts, strict=True) if r.text == reply_text(p, 6)]
    assert {r.status_code for r in responses if r not in whole} <= {504}
    assert len(whole) == 30 - sum(r.status_code == 504 for r in responses)


async def test_never_after_the_commit_point(
    start_proxy: Callable[..., ProxyServer],
    fast: FakeUpstreamServer,
    slow: FakeUpstreamServer,
    marker: str,
) -> None:
    proxy = hedging_proxy(start_proxy, fast.url, slow.url, idle_timeout=0.6)
    # The first part comes at once, then the stream stalls: the idle deadline, not a hedge.
    response = await post(proxy, f"{marker} @fault=hang-mid @after=1", SSE)
    events = sse_events(response.content)
    assert events[-1]["event"] == "error"
    assert slow.find(marker) == []


async def test_a_racer_that_fails_while_the_other_streams_does_not_fail_the_request(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    late = FakeUpstreamServer(tokens=4, slow_start=0.6)
    try:
        nobody = f"http://127.0.0.1:{free_port()}"  # the hedge's connection is refused
        proxy = hedging_proxy(start_proxy, late.url, nobody, retries=0)
        response = await post(proxy, marker)
        assert response.status_code == 200
        assert response.text == reply_text(marker, 4)
    finally:
        late.close()


async def test_both_failing_gives_one_error(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    late = FakeUpstreamServer(tokens=4, slow_start=0.5)
    try:
        nobody = f"http://127.0.0.1:{free_port()}"
        proxy = hedging_proxy(start_proxy, late.url, nobody, retries=0)
        response = await post(proxy, f"{marker} @fault=drop-mid @after=0")
        assert response.status_code == 502  # the upstream's broken stream, not the refusal
        assert response.json()["error"]["message"] == "upstream connection dropped before any text"
    finally:
        late.close()


async def test_a_key_with_room_for_one_stream_gets_its_one_hedged_stream(
    start_proxy: Callable[..., ProxyServer],
    slow: FakeUpstreamServer,
    fast: FakeUpstreamServer,
    marker: str,
) -> None:
    proxy = hedging_proxy(
        start_proxy, slow.url, fast.url, api_keys="key-one-SECRET", max_streams_per_key=1
    )
    response = await post(proxy, marker, Authorization="Bearer key-one-SECRET")
    assert response.status_code == 200  # the hedge took no second slot
    assert response.text == reply_text(marker, 6)
    result = await scrape_when(proxy, lambda s: hedges(s, "won") > 0)
    assert hedges(result, "won") == 1


async def test_auto_follows_the_observed_first_part_times(
    start_proxy: Callable[..., ProxyServer], fast: FakeUpstreamServer, marker: str
) -> None:
    # The first replica's 11th reply is slow: after 20 fast replies (10 on each replica).
    eleventh = FakeUpstreamServer(tokens=3, slow_start=SLOW_START, slow_every=11)
    try:
        proxy = hedging_proxy(start_proxy, eleventh.url, fast.url, hedge_after="auto")
        for number in range(20):  # too few to know the model's times: no hedge yet
            assert (await post(proxy, f"{marker}-{number}")).status_code == 200
        assert hedges(await scrape(proxy), "won") == 0
        response = await post(proxy, f"{marker}-slow")
        assert response.text == reply_text(f"{marker}-slow", 6)  # the hedge's, far sooner
        await eleventh.wait_disconnected(f"{marker}-slow", timeout=2)
        result = await scrape_when(proxy, lambda s: hedges(s, "won") > 0)
        assert hedges(result, "won") == 1
    finally:
        eleventh.close()


@pytest.mark.parametrize("accept", ["text/plain", SSE, NDJSON])
async def test_every_format_and_a_resume_work_with_a_hedged_stream(
    start_proxy: Callable[..., ProxyServer],
    slow: FakeUpstreamServer,
    fast: FakeUpstreamServer,
    marker: str,
    accept: str,
) -> None:
    proxy = hedging_proxy(start_proxy, slow.url, fast.url, resume=True)
    prompt = f"{marker} @think=3 @text=tricky"
    response = await post(proxy, prompt, accept, **{"X-Request-ID": marker})
    expected = reply_text(prompt, 6)
    if accept == "text/plain":
        assert response.text == expected
    else:
        events = events_of(accept, response.content)
        assert "".join(e["data"]["text"] for e in events if e["event"] == "delta") == expected
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        again = await client.get(f"/v1/stream/{marker}", params={"offset": 0})
    assert again.text == expected
    assert len(fast.find(marker)) == 1
