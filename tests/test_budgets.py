"""Issue 21: token budgets per named key, reserved, capped and settled (admission/budgets/)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as redis
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.admission.budgets import Budgets
from proxy.admission.budgets.headers import reset_duration
from proxy.admission.budgets.ledger import (
    MIN_ALLOWANCE,
    Grant,
    Refusal,
    Window,
    grant,
    output_estimate,
    prompt_estimate,
    token_rate,
    windows,
)
from proxy.admission.budgets.redis_store import RedisBudgetStore
from proxy.admission.budgets.store import Claim, MemoryBudgetStore
from proxy.conversation import Conversation, Message
from proxy.errors import BudgetUnavailable
from proxy.fake_upstream import prompt_tokens
from proxy.settings import ClientKeySpec, KeyLimits, ModelSpec
from tests.redis_server import RedisServer
from tests.scripted import LAST_CHUNK, Serve, chunk, read_request
from tests.servers import FakeUpstreamServer, ProxyProcess, ProxyServer
from tests.test_metrics import scrape_when
from tests.test_operations import log_lines  # noqa: F401  (fixture)
from tests.test_redis_faults import BUSY

MODEL = ModelSpec(name="m", input_price_per_mtok=2.5, output_price_per_mtok=10.0)

# --- the arithmetic ----------------------------------------------------------------------

limits_strategy = st.builds(
    KeyLimits,
    tokens_per_minute=st.none() | st.integers(1, 10_000),
    tokens_per_day=st.none() | st.integers(1, 100_000),
    spend_per_day=st.none() | st.floats(0.000_01, 100),
    spend_per_month=st.none() | st.floats(0.000_01, 1000),
)
moments = st.floats(0, 4_102_444_800)  # 1970 to 2100


@given(limits_strategy, moments)
def test_every_window_resets_after_now_and_a_later_period_is_another_window(
    limits: KeyLimits, now: float
) -> None:
    for window in windows(limits, MODEL, now):
        assert now < window.resets_at
        after = windows(limits, MODEL, window.resets_at)
        same = next(other for other in after if other.name == window.name)
        assert same.period != window.period
        assert same.resets_at > window.resets_at


def window_strategy() -> st.SearchStrategy[Window]:
    return st.builds(
        Window,
        st.sampled_from(["tokens_per_minute", "spend_per_day"]),
        st.just("p"),
        st.integers(0, 1_000_000),
        st.integers(0, 50),
        st.integers(0, 50),
        st.just(60.0),
    )


@given(
    st.lists(window_strategy(), min_size=1, max_size=4),
    st.lists(st.integers(0, 1_000_000), min_size=4, max_size=4),
    st.integers(0, 10_000),
    st.integers(1, 10_000),
)
def test_a_grant_fits_every_window_and_never_exceeds_what_was_asked(
    found: list[Window], used: list[int], prompt: int, requested: int
) -> None:
    windows_ = tuple(found)
    spent = tuple(used[: len(windows_)])
    decision = grant(windows_, spent, prompt, requested)
    if isinstance(decision, Grant):
        assert min(MIN_ALLOWANCE, requested) <= decision.allowance <= requested
        for window, before, charge in zip(windows_, spent, decision.charges, strict=True):
            assert charge >= 0
            assert before + charge <= window.limit
    else:  # refused: then even the smallest grant would not have fitted
        smallest = min(MIN_ALLOWANCE, requested)
        assert any(
            before + window.cost(prompt, smallest) > window.limit
            for window, before in zip(windows_, spent, strict=True)
        )


# One stream's life against a store: reserve, then settle what it really used (at most
# its reservation, as an upstream that honours max tokens does), or never settle (a
# replica that died: its hold lapses).
steps = st.lists(
    st.tuples(st.integers(0, 400), st.integers(1, 600), st.floats(0, 1), st.booleans()),
    min_size=1,
    max_size=40,
)


async def check_store_properties(store: Any, steps_: list[tuple[int, int, float, bool]]) -> None:
    limits = KeyLimits(tokens_per_minute=2_000, spend_per_day=0.05)
    now = 1_800_000_000.0
    found = windows(limits, MODEL, now)
    run = uuid.uuid4().hex  # a fresh set of keys: Redis outlives each example
    keys = tuple(f"k:{window.name}:{window.period}:{run}" for window in found)
    open_holds: list[tuple[Claim, Grant]] = []
    settled = [0] * len(found)
    for number, (prompt, requested, fraction, settles) in enumerate(steps_):
        claim = Claim(keys, found, f"h{number}", prompt, requested, now + 600)
        decision, counts = await store.reserve(claim, now)
        if isinstance(decision, Grant):
            for window, count in zip(found, counts, strict=True):
                assert 0 <= count <= window.limit
            if settles:
                open_holds.append((claim, decision))
        if open_holds and fraction > 0.5:
            held, granted = open_holds.pop(0)
            output = int(granted.allowance * fraction)
            charges = tuple(window.cost(held.prompt_tokens, output) for window in found)
            await store.settle(held, charges, now)
            settled = [total + charge for total, charge in zip(settled, charges, strict=True)]
        for window, count in zip(found, await store.counts(keys, now), strict=True):
            assert 0 <= count <= window.limit
    # Holds never settled (a replica that died) lapse at their deadline: what was settled
    # is all that is left counted.
    assert list(await store.counts(keys, now + 601)) == settled


@given(steps)
@settings(deadline=None)
def test_memory_counts_are_never_negative_nor_above_the_limit(
    steps_: list[tuple[int, int, float, bool]],
) -> None:
    asyncio.run(check_store_properties(MemoryBudgetStore(), steps_))


def test_estimates_are_documented_rules() -> None:
    # Every UTF-8 byte may be a token, plus eight per message; output four bytes a token.
    assert prompt_estimate(100, 2) == 116
    assert output_estimate(9) == 3
    assert token_rate(2.5) == 2_500  # nano-units per token of $2.50 per million
    assert reset_duration(0.2) == "1s"
    assert reset_duration(361) == "6m1s"
    assert reset_duration(3723) == "1h2m3s"


@pytest.mark.parametrize(
    ("used", "expected"),
    [(0, Grant(480, (500,))), (400, Grant(80, (100,))), (470, Refusal(0)), (485, Refusal(0))],
)
def test_the_allowance_is_capped_by_what_is_left(used: int, expected: Grant | Refusal) -> None:
    window = Window("tokens_per_minute", "p", 500, 1, 1, 60.0)
    assert grant((window,), (used,), 20, 500) == expected


# --- over real sockets, one proxy (budgets in memory) --------------------------------------

KEY = "sk-client-alice-SECRET"
BEARER = {"Authorization": f"Bearer {KEY}"}


def alice(**limits: Any) -> list[dict[str, Any]]:
    return [{"name": "alice", "key": KEY, **limits}]


async def post_stream(
    proxy: ProxyServer | Any, body: dict[str, Any], headers: dict[str, str] = BEARER
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=20) as client:
        return await client.post("/v1/stream", json=body, headers=headers)


async def usage_of(proxy: ProxyServer | Any, headers: dict[str, str] = BEARER) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.get("/v1/usage", headers=headers)
    assert response.status_code == 200, response.text
    windows_: dict[str, Any] = {window["window"]: window for window in response.json()["windows"]}
    return windows_


async def usage_when(
    proxy: ProxyServer | Any, window: str, used: int, headers: dict[str, str] = BEARER
) -> dict[str, Any]:
    """The window once `used` is what it shows: a stream settles as its session closes,
    just after its response has ended."""
    for _ in range(500):
        shown: dict[str, Any] = (await usage_of(proxy, headers))[window]
        if shown["used"] == used:
            break
        await asyncio.sleep(0.01)
    return shown


def stream_lines(lines: list[str], marker: str = "") -> list[dict[str, Any]]:
    found = [orjson.loads(line) for line in lines if '"logger":"proxy.stream"' in line]
    return [line for line in found if marker in str(line.get("request_id", ""))]


async def test_the_upstream_is_asked_for_the_allowance_and_the_stream_settles_exactly(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = start_proxy(key_list=alice(tokens_per_minute=200), rate_limit="10/minute")
    prompt = f"{marker} @tokens=30"
    response = await post_stream(proxy, {"prompt": prompt})
    assert response.status_code == 200
    reserved = prompt_estimate(len(prompt), 1)
    (received,) = upstream.find(marker)
    assert received.json["max_tokens"] == 200 - reserved  # what is left after the prompt
    assert response.headers["x-ratelimit-limit-tokens"] == "200"
    assert response.headers["x-ratelimit-remaining-tokens"] == "0"  # all of it reserved
    assert response.headers["x-ratelimit-reset-tokens"].endswith("s")
    limit, left = (response.headers[f"x-ratelimit-{w}-requests"] for w in ("limit", "remaining"))
    assert (limit, left) == ("10", "9")
    used = prompt_tokens(prompt) + 30  # what the fake reported: settled, the rest refunded
    minute = await usage_when(proxy, "tokens_per_minute", used)
    assert (minute["limit"], minute["used"], minute["remaining"]) == (200, used, 200 - used)


async def test_an_upstream_error_before_the_first_token_still_tells_what_is_left(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    # Refunded whole (nothing was produced), and the 502 says so in the key's headers.
    proxy = start_proxy(key_list=alice(tokens_per_minute=10_000), retries=0)
    response = await post_stream(proxy, {"prompt": f"{marker} @fault=status @status=502"})
    assert response.status_code == 502
    assert response.headers["x-ratelimit-limit-tokens"] == "10000"
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < 10_000  # while it was held
    assert (await usage_when(proxy, "tokens_per_minute", 0))["used"] == 0


async def test_a_refusal_before_the_budget_and_the_model_list_tell_what_is_left_too(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    # OpenAI's headers on every response to a budgeted key: these reserve nothing, so they
    # say how the key's windows stand.
    proxy = start_proxy(key_list=alice(tokens_per_minute=10_000))
    spent = await post_stream(proxy, {"prompt": f"{marker} @tokens=30"})
    assert spent.status_code == 200
    left = 10_000 - (await usage_of(proxy))["tokens_per_minute"]["used"]
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        invalid = await client.post("/v1/stream", json={"prompt": 5}, headers=BEARER)
        unknown = await client.post(
            "/v1/stream", json={"prompt": marker, "model": "nope"}, headers=BEARER
        )
        models = await client.get("/v1/models", headers=BEARER)
    assert (invalid.status_code, unknown.status_code, models.status_code) == (422, 404, 200)
    for response in (invalid, unknown, models):
        assert response.headers["x-ratelimit-limit-tokens"] == "10000"
        assert response.headers["x-ratelimit-remaining-tokens"] == str(left)


async def test_a_smaller_max_tokens_is_kept_and_a_spent_budget_is_429_with_retry_after(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = start_proxy(key_list=alice(tokens_per_day=110))
    first = await post_stream(proxy, {"prompt": f"{marker} @tokens=70", "max_tokens": 70})
    assert first.status_code == 200
    assert upstream.find(marker)[0].json["max_tokens"] == 70
    refused = await post_stream(proxy, {"prompt": f"{marker} again"})
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "budget_exceeded"
    assert "tokens_per_day" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 86400
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert len(upstream.find(marker)) == 1  # the refused one never went upstream


async def test_an_upstream_that_ignores_max_tokens_is_cut_at_the_allowance_as_a_failure(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = start_proxy(key_list=alice(tokens_per_minute=1000))
    prompt = f"{marker} @ignore_max_tokens=1 @tokens=5000 @delay=0.002"
    async with httpx.AsyncClient(base_url=proxy.url, timeout=20) as client:
        sse = await client.post(
            "/v1/stream",
            json={"prompt": prompt, "max_tokens": 20},
            headers={**BEARER, "Accept": "text/event-stream"},
        )
        with pytest.raises(httpx.RemoteProtocolError):  # raw text: an abort, never a clean end
            await client.post(
                "/v1/stream", json={"prompt": prompt, "max_tokens": 20}, headers=BEARER
            )
    assert sse.status_code == 200
    events = [line for line in sse.text.splitlines() if line.startswith("data:")]
    assert "output_limit_reached" in events[-1]
    text = "".join(orjson.loads(line[5:]).get("text", "") for line in events[:-1])
    # Cut at the allowance (20 tokens, one a delta, within 8 bytes each): not 5000 tokens.
    assert 0 < len(text.encode()) <= 20 * 8
    assert len(events) - 1 == 20


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
TWO_BYTES = b'data: {"choices":[{"delta":{"content":"ab"}}]}\n\n'


async def two_byte_tokens(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
) -> None:
    """An OpenAI-compatible upstream that ignores max_tokens: 200 deltas of one two-byte token."""
    await read_request(reader)
    writer.write(SSE_HEAD)
    for _ in range(200):
        if reader.at_eof():  # the proxy cut the stream
            return
        writer.write(chunk(TWO_BYTES))
        await writer.drain()
        await asyncio.sleep(0.002)
    writer.write(chunk(b"data: [DONE]\n\n") + LAST_CHUNK)
    await writer.drain()


async def test_an_upstream_of_short_tokens_that_ignores_max_tokens_is_cut_by_its_deltas(
    start_proxy: Callable[..., ProxyServer],
    serve: Serve,
) -> None:
    # Eight bytes a token would let 40 two-byte tokens through: one token a delta cuts at 10.
    proxy = start_proxy(
        upstream_url=await serve(two_byte_tokens), key_list=alice(tokens_per_day=1000)
    )
    async with httpx.AsyncClient(base_url=proxy.url, timeout=20) as client:
        sse = await client.post(
            "/v1/stream",
            json={"prompt": "hi", "max_tokens": 10},
            headers={**BEARER, "Accept": "text/event-stream"},
        )
    assert sse.status_code == 200
    events = [line for line in sse.text.splitlines() if line.startswith("data:")]
    assert "output_limit_reached" in events[-1]
    texts = [orjson.loads(line[5:]).get("text", "") for line in events[:-1]]
    # One event a part (deltas one read brought are one part, so never more than ten tokens
    # are counted short): ten parts reach the client, the eleventh is cut.
    assert len(texts) == 10
    assert "".join(texts) == "ab" * (len("".join(texts)) // 2)


async def test_a_client_that_leaves_mid_stream_is_settled_from_what_was_produced(
    start_proxy: Callable[..., ProxyServer],
    upstream: FakeUpstreamServer,
    marker: str,
    log_lines: list[str],  # noqa: F811
) -> None:
    proxy = start_proxy(key_list=alice(tokens_per_day=10_000))
    prompt = f"{marker} @tokens=400 @delay=0.02"
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=20) as client,
        client.stream(
            "POST",
            "/v1/stream",
            json={"prompt": prompt},
            headers={**BEARER, "X-Request-ID": marker},
        ) as response,
    ):
        chunks = response.aiter_raw()
        await anext(chunks)
        await anext(chunks)
    await upstream.wait_disconnected(marker)
    for _ in range(200):  # the session settles as it closes, just after the upstream's close
        line = next(iter(stream_lines(log_lines, marker)), None)
        if line is not None:
            break
        await asyncio.sleep(0.01)
    assert line is not None
    assert line["outcome"] == "client_disconnected"
    assert line["usage_source"] == "estimated"
    expected = prompt_estimate(len(prompt), 1) + output_estimate(line["bytes"])
    assert line["settled_tokens"] == expected < line["reserved_tokens"]
    assert (await usage_when(proxy, "tokens_per_day", expected))["used"] == expected


async def test_plain_keys_and_keys_without_budgets_are_served_as_before(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(
        api_keys="sk-plain-SECRET", key_list=[{"name": "bob", "key": "sk-bob-SECRET"}]
    )
    for key in ("sk-plain-SECRET", "sk-bob-SECRET"):
        headers = {"Authorization": f"Bearer {key}"}
        response = await post_stream(proxy, {"prompt": marker}, headers)
        assert response.status_code == 200
        assert "x-ratelimit-limit-tokens" not in response.headers
    assert (
        await post_stream(proxy, {"prompt": marker}, {"Authorization": "Bearer x"})
    ).status_code == 401


# --- shared in Redis, by two proxy processes ----------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.kill()


@given(steps)
@settings(deadline=None, max_examples=25)
def test_redis_counts_are_never_negative_nor_above_the_limit(
    redis_server: RedisServer, steps_: list[tuple[int, int, float, bool]]
) -> None:
    async def check() -> None:
        client = redis.Redis.from_url(redis_server.url)
        try:
            await check_store_properties(RedisBudgetStore(client), steps_)
        finally:
            await client.aclose()

    asyncio.run(check())


async def test_an_undone_reservation_counts_nothing_whether_it_ran_before_or_after_its_undo(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store = RedisBudgetStore(client)
    now = 1_800_000_000.0
    found = windows(KeyLimits(tokens_per_minute=2_000), MODEL, now)
    keys = tuple(f"undo:{window.name}:{uuid.uuid4().hex}" for window in found)
    try:
        undone_first = Claim(keys, found, "undone-first", 100, 200, now + 600)
        await store.undo(undone_first, now)
        late, _ = await store.reserve(undone_first, now)  # the reserve that ran late
        assert isinstance(late, Refusal)
        undone_after = Claim(keys, found, "undone-after", 100, 200, now + 600)
        granted, _ = await store.reserve(undone_after, now)
        assert isinstance(granted, Grant)
        await store.undo(undone_after, now)
        assert await store.counts(keys, now) == (0,) * len(found)
    finally:
        await client.aclose()


async def test_a_reservation_answered_late_is_undone_and_leaves_no_hold(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    limits = KeyLimits(tokens_per_day=5_000)
    budgets = Budgets(
        (ClientKeySpec("alice", b"a", limits), ClientKeySpec("bob", b"b", limits)),
        RedisBudgetStore(client),
        fail_open=False,
        hold_expiry=600,
        timeout=0.1,
    )
    conversation = Conversation((Message("user", "hello"),), max_tokens=100)
    await budgets.reserve("bob", MODEL, conversation)  # scripts loaded
    busier = redis.Redis.from_url(redis_server.url)
    busy = asyncio.create_task(busier.eval(BUSY, 0, 600_000))
    await asyncio.sleep(0.1)  # the busy script has Redis's one thread
    try:
        with pytest.raises(BudgetUnavailable):
            await budgets.reserve("alice", MODEL, conversation)
        await busy  # then the late reserve runs, and its undo
        await budgets.aclose()
        keys = [key async for key in client.scan_iter("llm-stream-proxy:budget:alice:*")]
        holds = [await client.hgetall(key) for key in keys]
        assert holds  # the late reserve did run...
        for fields in holds:  # ...and holds nothing: its hold is zero until its deadline
            units = {value.split(b":")[0] for name, value in fields.items() if name != b"settled"}
            assert units == {b"0"}
    finally:
        await client.aclose()
        await busier.aclose()


def shared_environment(upstream: FakeUpstreamServer, redis_url: str, keys: Any) -> dict[str, str]:
    return {
        "PROXY_UPSTREAM_URL": upstream.url,
        "PROXY_REDIS_URL": redis_url,
        "PROXY_KEYS": orjson.dumps(keys).decode(),
        "PROXY_MAX_CONCURRENT_STREAMS": "100",
    }


async def test_thirty_concurrent_streams_on_two_replicas_never_spend_past_the_budget(
    upstream: FakeUpstreamServer, redis_server: RedisServer, marker: str
) -> None:
    # Each stream reserves its prompt estimate (40 bytes + 8) plus 40 tokens: ten fit in 900.
    budget, tokens = 900, 40
    environment = shared_environment(upstream, redis_server.url, alice(tokens_per_day=budget))
    replicas = ProxyProcess(**environment), ProxyProcess(**environment)
    try:
        prompts = [f"{marker} s{number:02} @tokens={tokens} @delay=0.05" for number in range(30)]
        responses = await asyncio.gather(
            *(
                post_stream(replicas[number % 2], {"prompt": prompt, "max_tokens": tokens})
                for number, prompt in enumerate(prompts)
            )
        )
        admitted = [p for p, r in zip(prompts, responses, strict=True) if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert {r.status_code for r in refused} == {429}
        assert len(admitted) == 10
        received = upstream.find(marker)
        assert sorted(record.prompt for record in received) == sorted(admitted)
        assert {record.json["max_tokens"] for record in received} == {tokens}
        # What the upstream reported using, all admitted streams together.
        reported = sum(prompt_tokens(prompt) + tokens for prompt in admitted)
        assert reported <= budget
        # Every stream has ended: only what was used is counted, the rest is back.
        assert (await usage_when(replicas[1], "tokens_per_day", reported))["used"] == reported
        # 300 more tokens: far more than was left while the ten streams held their reservations.
        again = f"{marker} again"
        response = await post_stream(replicas[0], {"prompt": again, "max_tokens": 300})
        assert response.status_code == 200
        assert upstream.find(again)[0].json["max_tokens"] == 300
    finally:
        for replica in replicas:
            replica.close()


async def test_a_key_given_as_its_hash_works_and_its_raw_value_is_in_no_log(
    upstream: FakeUpstreamServer, redis_server: RedisServer, marker: str
) -> None:
    raw = f"sk-{marker}-SECRET"
    keys = [{"name": "carol", "key_sha256": hashlib.sha256(raw.encode()).hexdigest()}]
    environment = shared_environment(upstream, redis_server.url, keys)
    replica = ProxyProcess(PROXY_LOG_LEVEL="debug", **environment)
    try:
        headers = {"Authorization": f"Bearer {raw}"}
        assert (await post_stream(replica, {"prompt": marker}, headers)).status_code == 200
        assert (
            await post_stream(replica, {"prompt": marker}, {"X-API-Key": raw})
        ).status_code == 200
        wrong = {"Authorization": f"Bearer {raw}x"}
        assert (await post_stream(replica, {"prompt": marker}, wrong)).status_code == 401
        replica.wait_for_line("client=carol")
    finally:
        replica.close()
    assert not [line for line in replica.lines if marker in line and "SECRET" in line]
    assert not [line for line in replica.lines if raw in line]


async def test_budgets_fail_closed_while_redis_is_down_and_recover_when_it_returns(
    start_proxy: Callable[..., ProxyServer],
    marker: str,
    log_lines: list[str],  # noqa: F811
) -> None:
    server = RedisServer()
    try:
        proxy = start_proxy(redis_url=server.url, key_list=alice(tokens_per_day=300))
        assert (await post_stream(proxy, {"prompt": marker, "max_tokens": 100})).status_code == 200
        server.kill()
        down = await post_stream(proxy, {"prompt": marker})
        assert down.status_code == 503
        assert down.json()["error"]["type"] == "budget_unavailable"
        assert "Redis" in down.json()["error"]["message"]
        warnings = [line for line in log_lines if "budget store unavailable" in line]
        assert warnings
        assert "refusing budgeted keys" in warnings[0]
        server.restart()
        # Back by itself, and limiting again: the budget is enforced on the new Redis.
        statuses = [
            (
                await post_stream(proxy, {"prompt": f"{marker} @tokens=100", "max_tokens": 100})
            ).status_code
            for _ in range(4)
        ]
        assert statuses[0] == 200
        assert statuses[-1] == 429
    finally:
        server.kill()


async def test_budget_fail_open_serves_a_budgeted_key_while_redis_is_down(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    server = RedisServer()
    proxy = start_proxy(
        redis_url=server.url, key_list=alice(tokens_per_day=300), budget_fail_open=True
    )
    server.kill()
    response = await post_stream(proxy, {"prompt": marker, "max_tokens": 50})
    assert response.status_code == 200
    assert upstream.find(marker)[0].json["max_tokens"] == 50


async def test_metrics_count_reserved_settled_refunded_refusals_and_spend(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    prices = {"input_price_per_mtok": 2.0, "output_price_per_mtok": 8.0}
    priced: dict[str, Any] = {"name": "priced", "url": upstream.url, **prices}
    keys = [
        *alice(tokens_per_day=1000, spend_per_day=0.001),
        {"name": "dave", "key": "sk-dave-SECRET", "tokens_per_day": 20},
    ]
    proxy = start_proxy(model_list=[priced], key_list=keys)
    prompt = f"{marker} @tokens=30"
    assert (await post_stream(proxy, {"prompt": prompt, "max_tokens": 50})).status_code == 200
    dave = {"Authorization": "Bearer sk-dave-SECRET"}
    assert (await post_stream(proxy, {"prompt": prompt}, dave)).status_code == 429
    result = await scrape_when(
        proxy,
        lambda scrape: (
            scrape.value("llm_proxy_budget_refusals_total") >= 1
            and scrape.value("llm_proxy_budget_tokens_total", step="settled") > 0
        ),
    )
    reserved, settled = prompt_estimate(len(prompt), 1) + 50, prompt_tokens(prompt) + 30
    assert result.table("llm_proxy_budget_tokens_total", "key", "model", "step") == {
        ("alice", "priced", "reserved"): reserved,
        ("alice", "priced", "settled"): settled,
        ("alice", "priced", "refunded"): reserved - settled,
    }
    assert result.table("llm_proxy_budget_refusals_total", "key", "window") == {
        ("dave", "tokens_per_day"): 1
    }
    spend = (prompt_tokens(prompt) * 2.0 + 30 * 8.0) / 1_000_000
    assert result.value("llm_proxy_budget_spend_total", key="alice") == pytest.approx(spend)
    assert (await usage_when(proxy, "tokens_per_day", settled))["used"] == settled
    assert (await usage_of(proxy))["spend_per_day"]["used"] == pytest.approx(spend)


async def test_an_error_before_any_text_refunds_the_whole_reservation(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(key_list=alice(tokens_per_day=1000), retries=0)
    failed = await post_stream(proxy, {"prompt": f"{marker} @fault=status @status=500"})
    assert failed.status_code == 502
    assert (await usage_of(proxy))["tokens_per_day"]["used"] == 0


async def test_a_resumable_stream_is_budgeted_and_settled_by_its_producer(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = start_proxy(key_list=alice(tokens_per_day=1000), resume=True)
    prompt = f"{marker} @tokens=20"
    response = await post_stream(proxy, {"prompt": prompt}, {**BEARER, "X-Request-ID": marker})
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit-tokens"] == "1000"
    assert upstream.find(marker)[0].json["max_tokens"] == 1000 - prompt_estimate(len(prompt), 1)
    used = prompt_tokens(prompt) + 20
    assert (await usage_when(proxy, "tokens_per_day", used))["used"] == used


async def test_openais_route_is_budgeted_with_its_headers_and_error_shape(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = start_proxy(key_list=alice(tokens_per_day=200))
    prompt = f"{marker} @tokens=20"
    body = {"model": "default", "messages": [{"role": "user", "content": prompt}]}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=20) as client:
        answer = await client.post("/v1/chat/completions", json=body, headers=BEARER)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ratelimit-limit-tokens"] == "200"
        allowance = upstream.find(marker)[0].json["max_tokens"]
        assert allowance == 200 - prompt_estimate(len(prompt), 1)
        await usage_when(proxy, "tokens_per_day", prompt_tokens(prompt) + 20)
        big = {**body, "messages": [{"role": "user", "content": "x" * 300}]}
        refused = await client.post("/v1/chat/completions", json=big, headers=BEARER)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"  # what OpenAI's SDKs expect
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert "retry-after" in refused.headers
