"""POST /v1/messages (issue 29, SPEC §5i), read by Anthropic's own SDKs over real sockets, for
every dialect behind one proxy; the fake upstream records what it was sent, so the translation
is asserted both ways."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from proxy.fake_upstream import (
    reasoning_text,
    reply_text,
    tool_answer_text,
    tool_call_id,
    tool_call_input,
)
from proxy.settings import ModelEntry
from tests.frontends import AI_SDK_DIRECTORY, install_ai_sdk, run_node_script
from tests.scripted import LAST_CHUNK, OK_HEAD, Serve, read_request
from tests.scripted import chunk as http_chunk
from tests.servers import FakeUpstreamServer, ProxyServer, proxy_settings
from tests.test_models import MODELS

KEY = "sk-messages-SECRET"
DIALECTS = {name: dialect for name, (dialect, _) in MODELS.items()}
THINKING = ("chat", "llama", "claude")
TOOLS = ("chat", "llama", "claude")
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
FAKE_SIGNATURE = base64.b64encode(b"fake-upstream thinking signature").decode()


def client_of(proxy: ProxyServer, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=key, max_retries=0, timeout=20)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# --- streamed ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", DIALECTS)
def test_the_stream_helper_reads_the_exact_text_for_every_dialect(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=20 @split=7"
    with (
        client_of(every_model) as client,
        client.messages.stream(model=model, max_tokens=1000, messages=user(prompt)) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == reply_text(prompt, 20)
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert (final.role, final.model, final.stop_reason) == ("assistant", model, "end_turn")
    assert final.id.startswith("msg_")


@pytest.mark.parametrize("model", THINKING)
def test_the_thinking_then_the_text_and_anthropics_signature(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @think=9 @text=tricky @tokens=12 @split=5"
    thinking = {"type": "enabled", "budget_tokens": 2048}
    with (
        client_of(every_model) as client,
        client.messages.stream(
            model=model, max_tokens=4000, messages=user(prompt), thinking=thinking
        ) as stream,
    ):
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text"]
    thought, answer = final.content
    assert thought.thinking == reasoning_text(prompt, 9)  # type: ignore[union-attr]
    assert answer.text == reply_text(prompt, 12)  # type: ignore[union-attr]
    # Only Anthropic's models sign their thinking; the others' blocks carry none.
    signature = FAKE_SIGNATURE if model == "claude" else ""
    assert thought.signature == signature  # type: ignore[union-attr]
    assert ("signature" in kinds) == (model == "claude")
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"


@pytest.mark.parametrize("model", TOOLS)
def test_a_tool_use_block_has_its_input_whole_and_the_result_gets_the_answer(
    every_model: ProxyServer, upstream: FakeUpstreamServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @call=1 @arg_split=3 @text_before_call=1"
    with (
        client_of(every_model) as client,
        client.messages.stream(
            model=model, max_tokens=1000, messages=user(prompt), tools=[WEATHER]
        ) as stream,
    ):
        for _ in stream:
            pass
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use"]
    call = final.content[1]
    assert call.type == "tool_use"
    assert (call.name, call.input) == ("get_weather", tool_call_input(prompt, 0))
    expected_id = tool_call_id(DIALECTS[model], 0)
    assert call.id == (expected_id or call.id)
    assert final.stop_reason == "tool_use"
    turns = [
        *user(prompt),
        {"role": "assistant", "content": [block.model_dump() for block in final.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
        },
    ]
    with client_of(every_model) as client:
        answer = client.messages.create(
            model=model, max_tokens=1000, messages=turns, tools=[WEATHER]
        )
    assert answer.content[0].text == tool_answer_text(["sunny"])  # type: ignore[union-attr]
    assert answer.stop_reason == "end_turn"


def test_thinking_sent_back_goes_upstream_to_anthropic_alone(
    every_model: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    thought = {"type": "thinking", "thinking": "Hm.", "signature": FAKE_SIGNATURE}
    turns = [
        *user(f"{marker} first"),
        {"role": "assistant", "content": [thought, {"type": "text", "text": "Hello"}]},
        *user(f"{marker} again"),
    ]
    with client_of(every_model) as client:
        for model in ("claude", "chat"):
            client.messages.create(model=model, max_tokens=100, messages=turns)
    to_claude, to_chat = upstream.find(marker)
    assert to_claude.json["messages"][1]["content"][0] == thought
    assert to_chat.json["messages"][1] == {"role": "assistant", "content": "Hello"}


# --- not streamed --------------------------------------------------------------------------


@pytest.mark.parametrize("model", DIALECTS)
def test_not_streamed_is_the_same_message(
    every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=15"
    with client_of(every_model) as client:
        message = client.messages.create(model=model, max_tokens=1000, messages=user(prompt))
    assert message.type == "message"
    assert message.content[0].text == reply_text(prompt, 15)  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    if DIALECTS[model] in ("openai", "anthropic", "ollama"):  # those report usage
        assert message.usage.output_tokens == 15


def test_not_streamed_tool_use_and_thinking(every_model: ProxyServer, marker: str) -> None:
    prompt = f"{marker} @think=4 @call=2"
    with client_of(every_model) as client:
        message = client.messages.create(
            model="claude",
            max_tokens=4000,
            messages=user(prompt),
            tools=[WEATHER, {**WEATHER, "name": "get_time"}],
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    assert [block.type for block in message.content] == ["thinking", "tool_use", "tool_use"]
    assert message.content[0].signature == FAKE_SIGNATURE  # type: ignore[union-attr]
    inputs = [block.input for block in message.content[1:]]  # type: ignore[union-attr]
    assert inputs == [tool_call_input(prompt, 0), tool_call_input(prompt, 1)]
    assert message.stop_reason == "tool_use"


# --- what reaches the upstream -------------------------------------------------------------


def test_the_request_is_translated_for_the_anthropic_dialect(
    every_model: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    with client_of(every_model) as client:
        client.messages.create(
            model="claude",
            max_tokens=500,
            system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image", "source": png}, {"type": "text", "text": marker}],
                }
            ],
            stop_sequences=["END"],
            # The SDK's 2.x dropped the sampling arguments from its signature; the API has them.
            extra_body={"temperature": 0.5, "top_k": 40},
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            metadata={"user_id": "u-1"},
        )
    (received,) = upstream.find(marker)
    sent = received.json
    assert sent["system"] == "Be brief.\n\nBe kind."
    assert sent["messages"][0]["content"][0] == {"type": "image", "source": png}
    assert (sent["max_tokens"], sent["stop_sequences"]) == (500, ["END"])
    assert (sent["temperature"], sent["top_k"]) == (0.5, 40)
    assert sent["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }
    assert "metadata" not in sent


def test_top_k_goes_to_ollama_and_tgi_and_is_refused_by_name_for_openai(
    every_model: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    with client_of(every_model) as client:
        for model, top_k in (("llama", 5), ("hf", 6)):
            client.messages.create(
                model=model, max_tokens=50, messages=user(marker), extra_body={"top_k": top_k}
            )
        with pytest.raises(anthropic.BadRequestError) as raised:
            client.messages.create(
                model="chat", max_tokens=50, messages=user(marker), extra_body={"top_k": 7}
            )
    to_ollama, to_tgi = upstream.find(marker)
    assert to_ollama.json["options"]["top_k"] == 5
    assert to_tgi.json["parameters"]["top_k"] == 6
    assert raised.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "top_k" in raised.value.message
    assert "openai" in raised.value.message


# --- errors in Anthropic's shape -----------------------------------------------------------


def test_a_wrong_key_is_an_authentication_error_and_either_header_works(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(api_keys=KEY)
    with (
        client_of(proxy, "sk-wrong") as client,
        pytest.raises(anthropic.AuthenticationError) as raised,
    ):
        client.messages.create(model="default", max_tokens=50, messages=user(marker))
    assert raised.value.body["type"] == "error"  # type: ignore[index]
    assert raised.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with client_of(proxy) as client:  # x-api-key
        assert client.messages.create(model="default", max_tokens=50, messages=user(marker))
    bearer = anthropic.Anthropic(base_url=proxy.url, auth_token=KEY, max_retries=0)
    with bearer:  # ANTHROPIC_AUTH_TOKEN: Authorization: Bearer
        assert bearer.messages.create(model="default", max_tokens=50, messages=user(marker))


def test_an_unknown_model_is_not_found(every_model: ProxyServer, marker: str) -> None:
    with client_of(every_model) as client, pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(model="claude-nope", max_tokens=50, messages=user(marker))
    assert raised.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_an_upstream_429_is_a_rate_limit_error(every_model: ProxyServer, marker: str) -> None:
    prompt = f"{marker} @fault=status @status=429 @retry_after=7"
    with (
        client_of(every_model) as client,
        pytest.raises(anthropic.RateLimitError) as raised,
    ):
        client.messages.create(model="claude", max_tokens=50, messages=user(prompt), stream=True)
    assert raised.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert raised.value.response.headers["retry-after"]


@pytest.mark.parametrize(
    ("fields", "headers", "named"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, {}, "tools.[0].type"),
        ({"mcp_servers": [{"type": "url", "url": "https://x"}]}, {}, "mcp_servers"),
        ({}, {"anthropic-beta": "files-api-2025-04-14"}, "files-api-2025-04-14"),
    ],
)
def test_what_is_not_relayed_is_a_bad_request_naming_it(
    every_model: ProxyServer,
    marker: str,
    fields: dict[str, Any],
    headers: dict[str, str],
    named: str,
) -> None:
    with (
        client_of(every_model) as client,
        pytest.raises(anthropic.BadRequestError) as raised,
    ):
        client.messages.create(
            model="claude",
            max_tokens=50,
            messages=user(marker),
            extra_body=fields,
            extra_headers=headers,
        )
    assert raised.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert named in raised.value.message


def test_the_betas_claude_code_sends_are_accepted(every_model: ProxyServer, marker: str) -> None:
    betas = ",".join(
        (
            "claude-code-20250219",
            "interleaved-thinking-2025-05-14",
            "fine-grained-tool-streaming-2025-05-14",
        )
    )
    with client_of(every_model) as client:
        message = client.messages.create(
            model="claude",
            max_tokens=50,
            messages=user(marker),
            extra_headers={"anthropic-beta": betas},
        )
    assert message.content[0].text == reply_text(marker, 12)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("settings", "directives", "status", "kind"),
    [
        ({}, "@fault=status @status=500", 502, "api_error"),
        ({"upstream_url": "http://127.0.0.1:9"}, "", 503, "overloaded_error"),
    ],
)
def test_an_upstream_failing_before_the_first_token_is_a_server_error(
    start_proxy: Callable[..., ProxyServer],
    marker: str,
    settings: dict[str, Any],
    directives: str,
    status: int,
    kind: str,
) -> None:
    proxy = start_proxy(**settings)
    with client_of(proxy) as client, pytest.raises(anthropic.InternalServerError) as raised:
        client.messages.create(
            model="default", max_tokens=50, messages=user(f"{marker} {directives}"), stream=True
        )
    assert raised.value.status_code == status
    assert raised.value.body["error"]["type"] == kind  # type: ignore[index]


def test_a_failure_mid_stream_raises_after_a_prefix(every_model: ProxyServer, marker: str) -> None:
    prompt = f"{marker} @text=tricky @tokens=12 @fault=drop-mid @after=4 @delay=0.02"
    seen: list[str] = []
    with (
        client_of(every_model) as client,
        pytest.raises(anthropic.APIStatusError) as raised,
        client.messages.stream(model="claude", max_tokens=100, messages=user(prompt)) as stream,
    ):
        seen.extend(stream.text_stream)
    assert seen
    assert reply_text(prompt, 12).startswith("".join(seen))
    assert raised.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_not_streamed_a_failure_mid_stream_is_a_502(every_model: ProxyServer, marker: str) -> None:
    prompt = f"{marker} @fault=drop-mid @after=4"
    with (
        client_of(every_model) as client,
        pytest.raises(anthropic.InternalServerError) as raised,
    ):
        client.messages.create(model="chat", max_tokens=100, messages=user(prompt))
    assert raised.value.status_code == 502


async def test_pings_while_waiting_and_events_in_anthropics_order(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(sse_keepalive=0.05)
    prompt = f"{marker} @tokens=3 @delay=0.3"
    body = {"model": "default", "max_tokens": 50, "messages": user(prompt), "stream": True}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post("/v1/messages", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block.split("\n", 2) for block in response.text.strip().split("\n\n")]
    names = [name.removeprefix("event: ") for name, *_ in events]
    for name, data in events:
        assert orjson.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")
    assert "ping" in names
    shown = [name for name in names if name != "ping"]
    assert shown == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


# --- Anthropic's npm package in Node 22 ----------------------------------------------------


@pytest.fixture(scope="session")
def node() -> str:
    return install_ai_sdk()


@pytest.mark.parametrize("model", ["chat", "claude"])
async def test_the_npm_sdk_streams_a_message_exactly(
    node: str, every_model: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=30 @split=1 @delay=0.01 @think=5"
    options = {"url": every_model.url, "key": KEY, "model": model, "prompt": prompt}
    seen = await run_node_script(node, AI_SDK_DIRECTORY / "anthropic_client.mjs", options)
    assert seen["error"] is None
    assert seen["text"] == reply_text(prompt, 30)
    assert seen["thinking"] == reasoning_text(prompt, 5)
    assert seen["final"]["content"][-1]["text"] == seen["text"]
    assert seen["final"]["stop_reason"] == "end_turn"
    assert len(seen["deltas"]) >= 10, "the answer did not stream"


async def test_a_stop_at_a_stop_sequence_is_said_as_anthropic_says_it(serve: Serve) -> None:
    """An upstream that stopped at one of the request's stop sequences: `stop_sequence`, not
    a natural `end_turn` (the upstream's word is kept apart from the normalized stop)."""

    async def handler(reader: Any, writer: Any, n: int) -> None:
        await read_request(reader)
        events = [
            {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "up to "},
            },
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
                "usage": {"output_tokens": 2},
            },
            {"type": "message_stop"},
        ]
        body = b"".join(
            b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e)) for e in events
        )
        writer.write(OK_HEAD + http_chunk(body) + LAST_CHUNK)
        await writer.drain()

    entry = ModelEntry(name="claude", dialect="anthropic", url=await serve(handler))
    proxy = ProxyServer(proxy_settings(None, model_list=(entry,)))
    client = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="x", max_retries=0, timeout=20)
    try:
        message = await client.messages.create(
            model="claude", max_tokens=50, messages=user("count"), stop_sequences=["END"]
        )
    finally:
        await client.close()
        proxy.close()
    assert message.stop_reason == "stop_sequence"
    assert [block.text for block in message.content] == ["up to "]  # type: ignore[union-attr]
