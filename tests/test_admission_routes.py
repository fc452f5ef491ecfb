"""Issue 4's guards over real sockets: keys, CORS, the stream cap, per-client limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest

from proxy.admission import client_id
from proxy.fake_upstream import reply_text
from tests.redis_server import RedisServer
from tests.servers import FakeUpstreamServer, ProxyProcess, ProxyServer
from tests.test_operations import log_lines  # noqa: F401  (fixture)

KEYS = "key-alpha-SECRET,key-beta-SECRET"


async def stream_status(
    proxy: ProxyServer | ProxyProcess, prompt: str, **headers: str
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        return await client.post("/v1/stream", json={"prompt": prompt}, headers=headers)


@asynccontextmanager
async def open_stream(
    proxy: ProxyServer, prompt: str, **headers: str
) -> AsyncIterator[httpx.Response]:
    """A stream past its first token, held open until the block ends."""
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=10) as client,
        client.stream("POST", "/v1/stream", json={"prompt": prompt}, headers=headers) as response,
    ):
        assert response.status_code == 200
        # Keep the iterator referenced: a collected one closes the response behind our back.
        chunks = response.aiter_raw()
        await anext(chunks)
        yield response


# --- client keys -------------------------------------------------------------------------


async def test_missing_or_wrong_key_is_401_with_www_authenticate(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(api_keys=KEYS)
    for headers in ({}, {"Authorization": "Bearer nope"}, {"x-api-key": "nope"},
                    {"Authorization": "Basic key-alpha-SECRET"}):  # fmt: skip
        response = await stream_status(proxy, marker, **headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "unauthorized"


async def test_valid_key_as_bearer_or_x_api_key_is_served(
    start_proxy: Callable[..., ProxyServer],
    marker: str,
    log_lines: list[str],  # noqa: F811
) -> None:
    proxy = start_proxy(api_keys=KEYS)
    prompt = f"{marker} @text=tricky"
    bearer = await stream_status(proxy, prompt, Authorization="Bearer key-alpha-SECRET")
    header = await stream_status(proxy, prompt, **{"x-api-key": "key-beta-SECRET"})
    assert (bearer.status_code, header.status_code) == (200, 200)
    assert bearer.text == reply_text(prompt, 12)
    clients = {orjson.loads(line).get("client") for line in log_lines if '"proxy.stream"' in line}
    assert {client_id("key-alpha-SECRET"), client_id("key-beta-SECRET")} <= clients
    assert not [line for line in log_lines if "SECRET" in line]


async def test_models_endpoint_needs_a_key_too(start_proxy: Callable[..., ProxyServer]) -> None:
    proxy = start_proxy(api_keys=KEYS)
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        assert (await client.get("/v1/models")).status_code == 401
        authorized = await client.get("/v1/models", headers={"x-api-key": "key-beta-SECRET"})
    assert authorized.status_code == 200


# --- CORS --------------------------------------------------------------------------------


async def test_cors_preflight_and_actual_request_from_an_allowed_origin(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(cors_origins="https://chat.example, https://other.example")
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        preflight = await client.options(
            "/v1/stream",
            headers={
                "Origin": "https://chat.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, authorization",
            },
        )
        actual = await client.post(
            "/v1/stream",
            json={"prompt": f"{marker} @text=tricky"},
            headers={"Origin": "https://chat.example"},
        )
        foreign = await client.post(
            "/v1/stream", json={"prompt": marker}, headers={"Origin": "https://evil.example"}
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://chat.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed_headers = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers
    assert "content-type" in allowed_headers
    assert actual.headers["access-control-allow-origin"] == "https://chat.example"
    exposed = actual.headers["access-control-expose-headers"].lower()
    # A page reads its request id, when to retry, and a budgeted key's limits (issue 21).
    for header in ("x-request-id", "retry-after", "x-ratelimit-remaining-tokens"):
        assert header in exposed
    assert actual.text == reply_text(f"{marker} @text=tricky", 12)
    assert "access-control-allow-origin" not in foreign.headers


# --- the stream cap ----------------------------------------------------------------------


async def admitted_again(proxy: ProxyServer, marker: str, **headers: str) -> bool:
    """Whether a new stream gets in; a few tries, each a whole request, not a timer.

    The slot is released just after the client has seen the end of its response, so the
    very next request may still race it; a leaked slot fails every try.
    """
    for attempt in range(5):
        response = await stream_status(proxy, f"{marker}-probe{attempt} @tokens=1", **headers)
        if response.status_code == 200:
            return True
        assert response.status_code in (429, 503)
    return False


async def test_third_stream_over_a_cap_of_two_gets_503_with_retry_after(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(max_concurrent_streams=2, idle_timeout=10)
    hang = f"{marker} @fault=hang-mid @after=1"
    async with open_stream(proxy, f"{hang} a"), open_stream(proxy, f"{hang} b"):
        third = await stream_status(proxy, marker)
        assert third.status_code == 503
        assert third.headers["retry-after"] == "1"
        assert third.json()["error"]["type"] == "overloaded"
    assert await admitted_again(proxy, marker)


@pytest.mark.parametrize(
    "exit_path", ["completion", "abort", "client_disconnect", "error_before_commit"]
)
async def test_stream_slot_is_released_on_every_exit_path(
    start_proxy: Callable[..., ProxyServer], marker: str, exit_path: str
) -> None:
    proxy = start_proxy(max_concurrent_streams=2, idle_timeout=10)
    async with open_stream(proxy, f"{marker} @fault=hang-mid @after=1 held"):
        if exit_path == "completion":
            assert (await stream_status(proxy, f"{marker} done")).status_code == 200
        elif exit_path == "abort":
            with pytest.raises(httpx.RemoteProtocolError):
                await stream_status(proxy, f"{marker} @fault=drop-mid @after=2")
        elif exit_path == "client_disconnect":
            async with open_stream(proxy, f"{marker} @fault=hang-mid @after=1 left"):
                pass
        else:
            response = await stream_status(proxy, f"{marker} @fault=status @status=400")
            assert response.status_code == 502
        # One slot is still held by the hanging stream: a free second slot proves the release.
        assert await admitted_again(proxy, marker)


# --- per-client limits -------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.kill()


def backend_settings(backend: str, redis_server: RedisServer) -> dict[str, object]:
    return {"redis_url": redis_server.url} if backend == "redis" else {}


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_requests_per_minute_per_key(
    start_proxy: Callable[..., ProxyServer], redis_server: RedisServer, marker: str, backend: str
) -> None:
    keys = f"{marker}-a,{marker}-b"
    proxy = start_proxy(
        api_keys=keys, rate_limit="3/minute", **backend_settings(backend, redis_server)
    )
    a = {"Authorization": f"Bearer {marker}-a"}
    statuses = [(await stream_status(proxy, marker, **a)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = await stream_status(proxy, marker, **a)
    assert limited.json()["error"]["type"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    other = await stream_status(proxy, marker, Authorization=f"Bearer {marker}-b")
    assert other.status_code == 200


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_concurrent_streams_per_key(
    start_proxy: Callable[..., ProxyServer], redis_server: RedisServer, marker: str, backend: str
) -> None:
    keys = f"{marker}-a,{marker}-b"
    proxy = start_proxy(
        api_keys=keys,
        max_streams_per_key=1,
        idle_timeout=10,
        **backend_settings(backend, redis_server),
    )
    a = {"Authorization": f"Bearer {marker}-a"}
    async with open_stream(proxy, f"{marker} @fault=hang-mid @after=1", **a):
        second = await stream_status(proxy, marker, **a)
        assert second.status_code == 429
        other = await stream_status(proxy, marker, Authorization=f"Bearer {marker}-b")
        assert other.status_code == 200
    assert await admitted_again(proxy, marker, **a)


async def test_redis_limits_are_shared_by_two_proxy_processes(
    upstream: FakeUpstreamServer, redis_server: RedisServer, marker: str
) -> None:
    environment = {
        "PROXY_UPSTREAM_URL": upstream.url,
        "PROXY_API_KEYS": marker,
        "PROXY_RATE_LIMIT": "3/minute",
        "PROXY_REDIS_URL": redis_server.url,
    }
    first, second = ProxyProcess(**environment), ProxyProcess(**environment)
    try:
        key = {"Authorization": f"Bearer {marker}"}
        statuses = [
            (await stream_status(first, marker, **key)).status_code,
            (await stream_status(second, marker, **key)).status_code,
            (await stream_status(first, marker, **key)).status_code,
            (await stream_status(second, marker, **key)).status_code,
        ]
    finally:
        first.close()
        second.close()
    assert statuses == [200, 200, 200, 429]


@pytest.mark.parametrize(("fail_closed", "status"), [(False, 200), (True, 503)])
async def test_redis_going_away_fails_open_unless_told_otherwise(
    start_proxy: Callable[..., ProxyServer],
    marker: str,
    log_lines: list[str],  # noqa: F811
    fail_closed: bool,
    status: int,
) -> None:
    redis = RedisServer()
    try:
        proxy = start_proxy(
            rate_limit="100/minute", redis_url=redis.url, rate_limit_fail_closed=fail_closed
        )
        assert (await stream_status(proxy, marker)).status_code == 200
    finally:
        redis.kill()
    response = await stream_status(proxy, marker)
    assert response.status_code == status
    warnings = [orjson.loads(line) for line in log_lines if '"proxy.guards"' in line]
    assert warnings
    assert warnings[0]["level"] == "warning"


async def test_cors_does_not_buffer_the_stream(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = start_proxy(cors_origins="https://chat.example")
    prompt = f"{marker} @text=tricky @tokens=6 @delay=0.1"
    chunks: list[bytes] = []
    async with (
        httpx.AsyncClient(base_url=proxy.url) as client,
        client.stream(
            "POST",
            "/v1/stream",
            json={"prompt": prompt},
            headers={"Origin": "https://chat.example"},
        ) as response,
    ):
        assert response.headers["access-control-allow-origin"] == "https://chat.example"
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            if len(chunks) == 1:
                (record,) = upstream.find(marker)
                assert record.finished_at is None  # the first token is here before the last
    assert len(chunks) >= 3
    assert b"".join(chunks).decode() == reply_text(prompt, 6)
