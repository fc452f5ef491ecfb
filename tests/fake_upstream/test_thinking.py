"""A reply that thinks: reasoning tokens first, in each API's own wire shape, then the answer;
asked for and declined each API's way, counted in usage, paced, cut and faulted as text is."""

from __future__ import annotations

import itertools
import time
from typing import Any

import httpx
import pytest

from proxy.fake_upstream import (
    THOUGHTS,
    Directives,
    RecordingFakeUpstream,
    reasoning_text,
    reasoning_tokens,
    reply_text,
    reply_tokens,
)
from tests.fake_upstream.readers import CHAT, DIALECTS, TOKENS, dechunk, raw_exchange, raw_post

ANTHROPIC, OLLAMA = DIALECTS["anthropic"], DIALECTS["ollama"]


def openai_deltas(body: bytes) -> list[dict[str, Any]]:
    """The `delta` of every chunk that has a choice, in order."""
    events = CHAT.events(body)
    return [event["choices"][0]["delta"] for event in events[:-1] if event["choices"]]


def parts(name: str, body: bytes) -> list[tuple[str, str]]:
    """(channel, text) of every delta of a reply, as a reader of that API finds them."""
    found: list[tuple[str, str]] = []
    for event in DIALECTS[name].events(body):
        if name == "openai" and event != "[DONE]" and event["choices"]:
            delta = event["choices"][0]["delta"]
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            found += [("reasoning", reasoning)] if reasoning else []
            found += [("text", delta["content"])] if delta.get("content") else []
        elif name == "anthropic" and event["type"] == "content_block_delta":
            delta = event["delta"]
            if delta["type"] != "signature_delta":
                key = "thinking" if delta["type"] == "thinking_delta" else "text"
                found.append(("reasoning" if key == "thinking" else "text", delta[key]))
        elif name == "ollama":
            message = event["message"]
            found += [("reasoning", message["thinking"])] if "thinking" in message else []
            found += [("text", message["content"])] if message["content"] else []
    return found


def reasoning_then_text(prompt: str, thinking: int, answer: int) -> list[tuple[str, str]]:
    return [("reasoning", token) for token in reasoning_tokens(prompt, thinking)] + [
        ("text", token) for token in reply_tokens(prompt, answer)
    ]


def request(name: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {**DIALECTS[name].request(prompt), **extra}


async def send(client: httpx.AsyncClient, name: str, body: dict[str, Any]) -> httpx.Response:
    response = await client.post(DIALECTS[name].path, json=body)
    assert response.status_code == 200
    return response


# The reasoning text


def test_reasoning_is_deterministic_and_not_the_answer() -> None:
    assert reasoning_text("hi", 20) == reasoning_text("hi", 20)
    assert reasoning_text("hi", 20) == "".join(reasoning_tokens("hi", 20))
    assert reasoning_tokens("hi", 2 * len(THOUGHTS)) == [*THOUGHTS, *THOUGHTS]
    for prompt in ("hi", "hi @text=tricky"):
        assert reasoning_text(prompt, 4) != reply_text(prompt, 4)


def test_the_first_four_reasoning_tokens_have_characters_of_every_utf8_length() -> None:
    lengths = {len(char.encode()) for char in reasoning_text("hi", 4)}
    assert lengths == {1, 2, 3, 4}


def test_thinking_directives_parse_and_malformed_ones_keep_their_defaults() -> None:
    parsed = Directives.parse(
        "@think=3 @think_gap=0.5 @reasoning_field=reasoning", tokens=1, delay=0
    )
    assert (parsed.think, parsed.think_gap, parsed.reasoning_field) == (3, 0.5, "reasoning")
    parsed = Directives.parse("@think=x @think_gap=-1 @reasoning_field=thoughts", tokens=1, delay=0)
    assert (parsed.think, parsed.think_gap, parsed.reasoning_field) == (
        None,
        0.0,
        "reasoning_content",
    )


def test_a_refusal_wins_over_the_directive_and_asking_defaults_to_four_tokens() -> None:
    with_think = Directives.parse("@think=7", tokens=1, delay=0)
    without = Directives.parse("hi", tokens=1, delay=0)
    assert [with_think.thinking_tokens(asked) for asked in (True, False, None)] == [7, 0, 7]
    assert [without.thinking_tokens(asked) for asked in (True, False, None)] == [4, 0, 0]


# Each API's wire shape


async def test_openai_sends_reasoning_content_chunks_with_null_content_then_the_answer(
    client: httpx.AsyncClient,
) -> None:
    prompt = "hi @think=3 @text=tricky"
    deltas = openai_deltas((await send(client, "openai", request("openai", prompt))).content)
    thoughts = [{"reasoning_content": token, "content": None} for token in THOUGHTS[:3]]
    answer = [{"content": token} for token in reply_tokens(prompt, TOKENS)]
    assert deltas == [{"role": "assistant", "content": ""}, *thoughts, *answer, {}]


async def test_openai_sends_delta_reasoning_alone_when_the_prompt_names_that_field(
    client: httpx.AsyncClient,
) -> None:
    prompt = "hi @think=3 @reasoning_field=reasoning"
    deltas = openai_deltas((await send(client, "openai", request("openai", prompt))).content)
    thoughts = [{"reasoning": token} for token in THOUGHTS[:3]]
    answer = [{"content": token} for token in reply_tokens(prompt, TOKENS)]
    assert deltas == [{"role": "assistant", "content": ""}, *thoughts, *answer, {}]


async def test_anthropic_sends_a_signed_thinking_block_at_0_then_the_text_block_at_1(
    client: httpx.AsyncClient,
) -> None:
    prompt = "hi @think=2"
    events = ANTHROPIC.events(
        (await send(client, "anthropic", request("anthropic", prompt))).content
    )
    shapes = [(e["type"], e.get("index"), e.get("delta", {}).get("type")) for e in events]
    assert shapes == [
        ("message_start", None, None),
        ("content_block_start", 0, None),
        ("ping", None, None),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, None),
        *[("content_block_delta", 1, "text_delta")] * TOKENS,
        ("content_block_stop", 1, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]
    assert events[1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert events[7]["content_block"] == {"type": "text", "text": ""}
    assert [e["delta"]["thinking"] for e in events[3:5]] == list(THOUGHTS[:2])
    signature = events[5]["delta"]["signature"]
    assert isinstance(signature, str)
    assert len(signature) >= 16
    assert [e["delta"]["text"] for e in events[8:-3]] == reply_tokens(prompt, TOKENS)


async def test_anthropic_keeps_its_text_block_at_0_when_it_does_not_think(
    client: httpx.AsyncClient,
) -> None:
    events = ANTHROPIC.events((await send(client, "anthropic", request("anthropic", "hi"))).content)
    indices = {e["index"] for e in events if "index" in e}
    assert indices == {0}
    assert "thinking" not in str(events)


async def test_ollama_sends_thinking_lines_with_empty_content_before_the_content_lines(
    client: httpx.AsyncClient,
) -> None:
    prompt = "hi @think=3"
    events = OLLAMA.events((await send(client, "ollama", request("ollama", prompt))).content)
    messages = [event["message"] for event in events]
    thoughts = [{"role": "assistant", "content": "", "thinking": t} for t in THOUGHTS[:3]]
    answer = [{"role": "assistant", "content": t} for t in reply_tokens(prompt, TOKENS)]
    assert messages == [*thoughts, *answer, {"role": "assistant", "content": ""}]
    assert [event["done"] for event in events] == [False] * (3 + TOKENS) + [True]


@pytest.mark.parametrize("name", ["openai-completions", "tgi"])
async def test_apis_without_a_reasoning_shape_ignore_think_and_send_the_text(
    client: httpx.AsyncClient, name: str
) -> None:
    prompt = "hi @think=3 @text=tricky"
    response = await send(client, name, request(name, prompt))
    assert DIALECTS[name].read(response.content) == (reply_text(prompt, TOKENS), True)
    assert THOUGHTS[0] not in response.text


@pytest.mark.parametrize("name", ["openai", "anthropic", "ollama"])
async def test_every_byte_split_keeps_the_reasoning_then_the_answer(
    fake: RecordingFakeUpstream, name: str
) -> None:
    prompt = "hi @think=5 @split=1 @text=tricky"
    response = await raw_exchange(
        fake, raw_post(DIALECTS[name].path, request(name, prompt), close=True)
    )
    sizes, body, _ = dechunk(response.split(b"\r\n\r\n", 1)[1])
    assert set(sizes) == {1}
    assert parts(name, body) == reasoning_then_text(prompt, 5, TOKENS)


# Asking for reasoning, each API's way

ASKING: dict[str, list[dict[str, Any]]] = {
    "openai": [{"reasoning_effort": effort} for effort in ("minimal", "low", "medium", "high")],
    "anthropic": [{"thinking": {"type": "enabled", "budget_tokens": 1024}}],
    "ollama": [{"think": value} for value in (True, "low", "medium", "high")],
}
DECLINING: dict[str, dict[str, Any]] = {
    "openai": {"reasoning_effort": "none"},
    "anthropic": {"thinking": {"type": "disabled"}},
    "ollama": {"think": False},
}


@pytest.mark.parametrize(
    ("name", "asking"),
    [(name, asking) for name, ways in ASKING.items() for asking in ways],
)
async def test_a_request_that_asks_for_reasoning_gets_four_tokens_of_it(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient, name: str, asking: dict[str, Any]
) -> None:
    body = request(name, "hi", **asking)
    response = await send(client, name, body)
    assert parts(name, response.content) == reasoning_then_text("hi", 4, TOKENS)
    assert fake.records[-1].json == body  # what was asked, as a test of the proxy reads it


@pytest.mark.parametrize("name", DECLINING)
async def test_a_request_that_declines_reasoning_gets_none_even_with_think(
    client: httpx.AsyncClient, name: str
) -> None:
    prompt = "hi @think=3"
    response = await send(client, name, request(name, prompt, **DECLINING[name]))
    assert parts(name, response.content) == reasoning_then_text(prompt, 0, TOKENS)


@pytest.mark.parametrize("name", DECLINING)
async def test_a_request_that_does_not_say_gets_no_reasoning_without_think(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await send(client, name, request(name, "hi"))
    assert parts(name, response.content) == reasoning_then_text("hi", 0, TOKENS)


# Usage, max tokens, faults, pace


async def test_usage_counts_reasoning_among_the_completion_tokens(
    client: httpx.AsyncClient,
) -> None:
    prompt = "three words here @think=3"  # four words with the directive
    body = request("openai", prompt, stream_options={"include_usage": True})
    usage = CHAT.events((await send(client, "openai", body)).content)[-2]["usage"]
    assert usage == {
        "prompt_tokens": 4,
        "completion_tokens": 3 + TOKENS,
        "total_tokens": 4 + 3 + TOKENS,
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    anthropic = ANTHROPIC.events(
        (await send(client, "anthropic", request("anthropic", prompt))).content
    )
    assert anthropic[-2]["usage"] == {"output_tokens": 3 + TOKENS}
    ollama = OLLAMA.events((await send(client, "ollama", request("ollama", prompt))).content)
    assert (ollama[-1]["prompt_eval_count"], ollama[-1]["eval_count"]) == (4, 3 + TOKENS)


async def test_openai_usage_has_no_reasoning_details_without_reasoning(
    client: httpx.AsyncClient,
) -> None:
    body = request("openai", "hi", stream_options={"include_usage": True})
    usage = CHAT.events((await send(client, "openai", body)).content)[-2]["usage"]
    assert "completion_tokens_details" not in usage


@pytest.mark.parametrize(("max_tokens", "thinking", "answer"), [(5, 3, 2), (2, 2, 0)])
async def test_max_tokens_counts_the_reasoning_first(
    client: httpx.AsyncClient, max_tokens: int, thinking: int, answer: int
) -> None:
    prompt = "hi @think=3"
    response = await send(client, "openai", request("openai", prompt, max_tokens=max_tokens))
    assert parts("openai", response.content) == reasoning_then_text(prompt, thinking, answer)
    assert CHAT.events(response.content)[-2]["choices"][0]["finish_reason"] == "length"


async def test_a_mid_stream_fault_comes_after_all_the_reasoning_and_after_text_tokens(
    client: httpx.AsyncClient,
) -> None:
    prompt = "hi @think=3 @fault=error-event @after=1"
    response = await send(client, "openai", request("openai", prompt))
    assert parts("openai", response.content[: response.content.index(b'data: {"error"')]) == (
        reasoning_then_text(prompt, 3, 1)
    )
    assert CHAT.events(response.content)[-1]["error"]["message"] == "fake in-band error"


async def arrival_times(client: httpx.AsyncClient, name: str, prompt: str) -> list[float]:
    """When each reasoning delta of a reply arrived, in seconds since the request."""
    times: list[float] = []
    started = time.monotonic()
    dialect = DIALECTS[name]
    async with client.stream("POST", dialect.path, json=request(name, prompt)) as response:
        async for line in response.aiter_lines():
            if parts(name, line.encode())[:1] == [("reasoning", THOUGHTS[len(times)])]:
                times.append(time.monotonic() - started)
    return times


@pytest.mark.parametrize("name", ["openai", "anthropic", "ollama"])
async def test_think_gap_pauses_once_after_half_the_reasoning(
    client: httpx.AsyncClient, name: str
) -> None:
    first, second, third, fourth = await arrival_times(client, name, "hi @think=4 @think_gap=0.4")
    assert third - second >= 0.38
    assert max(second - first, fourth - third) < 0.3  # one pause, not one a token


async def test_reasoning_tokens_are_paced_by_delay_as_text_is(client: httpx.AsyncClient) -> None:
    times = await arrival_times(client, "openai", "hi @think=3 @delay=0.1")
    assert times[0] >= 0.09
    assert all(later - earlier >= 0.09 for earlier, later in itertools.pairwise(times))
