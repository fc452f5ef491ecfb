"""Spreading streams over a model's replicas, and resting the ones that fail: the Balancer
alone, then through the proxy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import orjson

from proxy.balancer import Balancer
from proxy.fake_upstream import reply_text
from tests.servers import FakeUpstreamServer, ProxyServer
from tests.test_admission_routes import stream_status
from tests.test_operations import log_lines  # noqa: F401  (fixture)

URLS = ("http://a", "http://b", "http://c")


def test_least_streams_in_flight_first() -> None:
    balancer = Balancer(URLS, cooldown=10)
    busy = balancer.acquire(set())
    second = balancer.acquire(set())
    third = balancer.acquire(set())
    assert len({busy.url, second.url, third.url}) == 3
    balancer.release(second)
    assert balancer.acquire(set()) is second


def test_ties_are_taken_in_turn() -> None:
    balancer = Balancer(URLS, cooldown=10)
    picked = []
    for _ in range(6):
        replica = balancer.acquire(set())
        picked.append(replica.url)
        balancer.release(replica)
    assert picked == [*URLS, *URLS]


def test_a_failed_replica_rests_for_its_cooldown() -> None:
    balancer = Balancer(URLS[:2], cooldown=10)
    first = balancer.acquire(set())
    balancer.release(first)
    balancer.failed(first)
    for _ in range(4):
        replica = balancer.acquire(set())
        balancer.release(replica)
        assert replica is not first
    assert balancer.healthy_urls() == [url for url in URLS[:2] if url != first.url]


def test_when_every_replica_rests_the_one_back_soonest_is_tried() -> None:
    balancer = Balancer(URLS[:2], cooldown=10)
    a, b = balancer.replicas
    balancer.failed(b)
    balancer.failed(a)
    assert balancer.acquire(set()) is b


def test_a_lone_replica_never_rests() -> None:
    balancer = Balancer(URLS[:1], cooldown=10)
    (only,) = balancer.replicas
    balancer.failed(only)
    assert balancer.healthy_urls() == [only.url]


def test_an_attempt_goes_to_a_replica_not_tried_yet() -> None:
    balancer = Balancer(URLS[:2], cooldown=10)
    first = balancer.acquire(set())
    second = balancer.acquire({first.url})
    assert second is not first
    assert not balancer.has_untried({first.url, second.url})
    # With every replica tried, the retry goes to one of them again rather than failing.
    assert balancer.acquire({first.url, second.url}).url in URLS


async def test_dead_replica_costs_no_request_and_is_skipped_after_its_first_failure(
    start_proxy: Callable[..., ProxyServer],
    upstream: FakeUpstreamServer,
    marker: str,
    log_lines: list[str],  # noqa: F811
) -> None:
    proxy = start_proxy(upstream_urls=f"http://127.0.0.1:9,{upstream.url}", retries=2)
    for i in range(6):
        response = await stream_status(proxy, f"{marker}-{i} @text=tricky")
        assert response.status_code == 200
        assert response.text == reply_text(f"{marker}-{i} @text=tricky", 12)
    streams = [orjson.loads(line) for line in log_lines if '"proxy.stream"' in line]
    attempts = [line["attempts"] for line in streams]
    assert sum(attempts) <= 7, attempts  # at most one wasted attempt, on the first failure
    assert all(line["upstream"] == upstream.url for line in streams)


async def test_streams_are_balanced_across_two_live_replicas(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    second = FakeUpstreamServer(tokens=12)
    try:
        proxy = start_proxy(upstream_urls=f"{upstream.url},{second.url}")
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=proxy.url, limits=limits, timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post("/v1/stream", json={"prompt": f"{marker}-{i} @delay=0.005"})
                    for i in range(100)
                )
            )
        assert all(response.status_code == 200 for response in responses)
        counts = (len(upstream.find(marker)), len(second.find(marker)))
        assert sum(counts) == 100
        assert all(40 <= count <= 60 for count in counts), counts
    finally:
        second.close()


async def test_readyz_follows_replica_health(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer
) -> None:
    proxy = start_proxy(upstream_urls=f"http://127.0.0.1:9,{upstream.url}")
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        assert (await client.get("/readyz")).status_code == 200
    dead = start_proxy(upstream_urls="http://127.0.0.1:9,http://127.0.0.1:10")
    async with httpx.AsyncClient(base_url=dead.url) as client:
        assert (await client.get("/readyz")).status_code == 503
