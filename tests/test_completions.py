"""POST /v1/chat/completions (SPEC §5c), driven by OpenAI's own SDKs over real sockets.

The Python SDK (`openai`, pinned in the dev extras) sync and async, and the npm package in
Node 22 (pinned in tests/js/package.json), against one proxy routing a model of every dialect
to the fake upstream; and a request shaped as Open WebUI sends it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import AsyncOpenAI, OpenAI

from proxy import opening
from proxy.fake_upstream import reply_text
from proxy.fake_upstream.replies import prompt_tokens
from proxy.settings import ModelEntry
from tests.frontends import AI_SDK_DIRECTORY, install_ai_sdk, run_node_script
from tests.scripted import LAST_CHUNK, OK_HEAD, Serve, read_request
from tests.scripted import chunk as http_chunk
from tests.servers import FakeUpstreamServer, ProxyServer, proxy_settings
from tests.test_metrics import scrape_when, total_streams
from tests.test_models import MODELS
from tests.test_operations import log_lines  # noqa: F401  (fixture)

KEY = "sk-completions-client-1"


@pytest.fixture(scope="module")
def dialects_proxy(upstream: FakeUpstreamServer) -> Iterator[ProxyServer]:
    """One model per dialect (tests/test_models.py's), all at the fake upstream."""
    entries = tuple(
        ModelEntry(name=name, dialect=dialect, url=upstream.url, max_tokens=500)  # type: ignore[arg-type]
        for name, (dialect, _) in MODELS.items()
    )
    server = ProxyServer(proxy_settings(upstream.url, model_list=entries))
    yield server
    server.close()


def sync_client(proxy: ProxyServer, key: str = KEY) -> OpenAI:
    # No retries of its own: every refusal is seen as the proxy gave it.
    return OpenAI(base_url=f"{proxy.url}/v1", api_key=key, max_retries=0, timeout=20)


def async_client(proxy: ProxyServer, key: str = KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=key, max_retries=0, timeout=20)


def user(prompt: str) -> list[Any]:
    return [{"role": "user", "content": prompt}]


# --- streamed ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("split", [0, 1, 7])
def test_sync_sdk_streams_the_exact_text_for_every_dialect(
    dialects_proxy: ProxyServer, marker: str, model: str, split: int
) -> None:
    # The tricky text (multi-byte UTF-8, CR/LF), its bytes cut 1 or 7 at a time upstream.
    prompt = f"{marker} @text=tricky @tokens=30 @split={split}"
    with sync_client(dialects_proxy) as client:
        stream = client.chat.completions.create(model=model, messages=user(prompt), stream=True)
        chunks = list(stream)
    first, *deltas, last = chunks
    assert first.choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in deltas) == reply_text(prompt, 30)
    assert last.choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in [first, *deltas])
    assert {(c.id, c.created, c.model, c.object) for c in chunks} == {
        (first.id, first.created, model, "chat.completion.chunk")
    }
    assert first.id.startswith("chatcmpl-")


@pytest.mark.parametrize("model", MODELS)
async def test_async_sdk_streams_the_text_then_the_usage_when_asked(
    dialects_proxy: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} count my words @text=tricky"
    async with async_client(dialects_proxy) as client:
        stream = await client.chat.completions.create(
            model=model,
            messages=user(prompt),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    *answer, usage = chunks
    text = "".join(c.choices[0].delta.content or "" for c in answer)
    assert text == reply_text(prompt, 12)
    assert answer[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in answer)
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == 12
    # TGI's stream counts generated tokens only: an unknown count stays null, never 0.
    expected_prompt = None if MODELS[model][0] == "tgi" else prompt_tokens(prompt)
    assert usage.usage.prompt_tokens == expected_prompt
    expected_total = None if expected_prompt is None else expected_prompt + 12
    assert usage.usage.total_tokens == expected_total


def test_without_include_usage_no_usage_chunk_is_sent(proxy: ProxyServer, marker: str) -> None:
    with sync_client(proxy) as client:
        stream = client.chat.completions.create(model="default", messages=user(marker), stream=True)
        chunks = list(stream)
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_stream_is_sse_ending_in_done_with_the_proxys_headers(
    proxy: ProxyServer, marker: str
) -> None:
    body = {"model": "default", "messages": user(f"{marker} @tokens=3"), "stream": True}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post(
            "/v1/chat/completions", json=body, headers={"X-Request-ID": marker}
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache, no-transform"
    assert response.headers["x-request-id"] == marker
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: {") for event in events[:-2])


async def test_a_waiting_stream_sends_keepalives_that_the_sdk_skips(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(sse_keepalive=0.05, idle_timeout=5)
    prompt = f"{marker} @text=tricky @tokens=3 @delay=0.4"
    body = {"model": "default", "messages": user(prompt), "stream": True}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        raw = await client.post("/v1/chat/completions", json=body)
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(
            model="default", messages=user(prompt), stream=True
        )
        deltas = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert b"\n\n: ping\n\n" in raw.content
    assert "".join(deltas) == reply_text(prompt, 3)


# --- not streamed --------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_sync_sdk_gets_the_whole_completion_for_every_dialect(
    dialects_proxy: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=20 @split=3"
    with sync_client(dialects_proxy) as client:
        completion = client.chat.completions.create(model=model, messages=user(prompt))
    assert completion.object == "chat.completion"
    assert completion.model == model
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == reply_text(prompt, 20)
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 20


@pytest.mark.parametrize("model", MODELS)
def test_an_answer_cut_at_max_tokens_finishes_with_length_for_every_dialect(
    dialects_proxy: ProxyServer, marker: str, model: str
) -> None:
    # The fake upstream stops at the max tokens it is sent, in each dialect's own field and
    # with its own words for why (length, max_tokens, ...): the client reads "length".
    prompt = f"{marker} @tokens=30"
    with sync_client(dialects_proxy) as client:
        completion = client.chat.completions.create(
            model=model, messages=user(prompt), max_tokens=5
        )
    assert completion.choices[0].message.content == reply_text(prompt, 5)
    assert completion.choices[0].finish_reason == "length"


async def test_async_sdk_gets_the_whole_completion(proxy: ProxyServer, marker: str) -> None:
    prompt = f"{marker} @text=tricky"
    async with async_client(proxy) as client:
        completion = await client.chat.completions.create(
            model="default", messages=user(prompt), stream=False
        )
    assert completion.choices[0].message.content == reply_text(prompt, 12)


async def test_finish_reason_length_is_relayed(serve: Serve) -> None:
    """An upstream that stopped at its token limit says so; so do both shapes."""

    async def handler(reader: Any, writer: Any, n: int) -> None:
        await read_request(reader)
        events = [
            {"choices": [{"index": 0, "delta": {"content": "cut "}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {"content": "short"}, "finish_reason": "length"}]},
        ]
        body = b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events)
        writer.write(OK_HEAD + http_chunk(body + b"data: [DONE]\n\n") + LAST_CHUNK)
        await writer.drain()

    proxy = ProxyServer(proxy_settings(await serve(handler)))
    try:
        async with async_client(proxy) as client:
            whole = await client.chat.completions.create(model="default", messages=user("hi"))
            stream = await client.chat.completions.create(
                model="default", messages=user("hi"), stream=True
            )
            chunks = [chunk async for chunk in stream]
    finally:
        proxy.close()
    assert whole.choices[0].message.content == "cut short"
    assert whole.choices[0].finish_reason == "length"
    assert chunks[-1].choices[0].finish_reason == "length"


# --- failures after the first token --------------------------------------------------------


@pytest.mark.parametrize("fault", ["drop-mid", "error-event", "hang-mid"])
def test_a_failure_mid_stream_raises_in_the_sync_sdk_after_a_prefix(
    proxy: ProxyServer, marker: str, fault: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=12 @fault={fault} @after=4 @delay=0.02"
    received: list[str] = []
    with sync_client(proxy) as client:
        stream = client.chat.completions.create(model="default", messages=user(prompt), stream=True)
        with pytest.raises(openai.APIError) as raised:
            received.extend(chunk.choices[0].delta.content or "" for chunk in stream)
    text = "".join(received)
    assert text, "the text before the failure was not relayed"
    assert reply_text(prompt, 12).startswith(text)
    assert text != reply_text(prompt, 12)
    assert raised.value.body["type"] == "server_error"  # type: ignore[index]


async def test_a_failure_mid_stream_raises_in_the_async_sdk(
    proxy: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=12 @fault=drop-mid @after=4 @delay=0.02"
    received: list[str] = []
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(
            model="default", messages=user(prompt), stream=True
        )
        with pytest.raises(openai.APIError, match="dropped"):
            await read_deltas(stream, received)
    assert received
    assert reply_text(prompt, 12).startswith("".join(received))


async def read_deltas(stream: Any, received: list[str]) -> None:
    async for chunk in stream:
        received.append(chunk.choices[0].delta.content or "")


def test_a_failure_after_the_first_token_is_a_502_when_not_streamed(
    proxy: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @fault=drop-mid @after=4"
    with sync_client(proxy) as client, pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="default", messages=user(prompt))
    assert raised.value.status_code == 502
    assert raised.value.body["code"] == "upstream_protocol_error"  # type: ignore[index]
    assert raised.value.response.headers["x-request-id"]


async def test_a_failed_stream_ends_with_the_error_event_and_no_done(
    proxy: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @fault=error-event @after=3"
    body = {"model": "default", "messages": user(prompt), "stream": True}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    *chunks, last = sse_data(response.text)
    assert "[DONE]" not in response.text
    assert orjson.loads(last) == {
        "error": {
            "message": orjson.loads(last)["error"]["message"],
            "type": "server_error",
            "param": None,
            "code": "upstream_protocol_error",
        }
    }
    text = "".join(orjson.loads(data)["choices"][0]["delta"].get("content", "") for data in chunks)
    assert text == reply_text(prompt, 3)


# --- typed errors before the commit point --------------------------------------------------


def test_a_missing_or_wrong_key_is_an_authentication_error(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(api_keys=KEY)
    with (
        sync_client(proxy, key="sk-wrong") as client,
        pytest.raises(openai.AuthenticationError) as raised,
    ):
        client.chat.completions.create(model="default", messages=user(marker), stream=True)
    assert raised.value.status_code == 401
    body = raised.value.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}  # OpenAI's error object
    assert (body["type"], body["param"], body["code"]) == (
        "authentication_error",
        None,
        "unauthorized",
    )
    assert raised.value.response.headers["www-authenticate"] == "Bearer"
    with sync_client(proxy) as client:
        completion = client.chat.completions.create(model="default", messages=user(marker))
    assert completion.choices[0].message.content == reply_text(marker, 12)


def test_an_unknown_model_is_not_found_naming_the_model(proxy: ProxyServer, marker: str) -> None:
    with sync_client(proxy) as client, pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-nope", messages=user(marker))
    assert raised.value.body["param"] == "model"  # type: ignore[index]
    assert raised.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_an_upstream_429_is_a_rate_limit_error_with_retry_after(
    proxy: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @fault=status @status=429 @retry_after=7"
    with sync_client(proxy) as client, pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="default", messages=user(prompt), stream=True)
    assert raised.value.body["type"] == "rate_limit_error"  # type: ignore[index]
    assert raised.value.response.headers["retry-after"]


@pytest.mark.parametrize(
    ("settings", "directives", "status", "code"),
    [
        ({}, "@fault=status @status=500", 502, "upstream_error"),
        ({"upstream_url": "http://127.0.0.1:9"}, "", 503, "upstream_unavailable"),
        ({"first_token_timeout": 0.3}, "@fault=hang-before", 504, "upstream_timeout"),
    ],
)
def test_an_upstream_failing_before_the_first_token_is_an_api_status_error(
    start_proxy: Callable[..., ProxyServer],
    marker: str,
    settings: dict[str, Any],
    directives: str,
    status: int,
    code: str,
) -> None:
    proxy = start_proxy(**settings)
    prompt = f"{marker} {directives}"
    with sync_client(proxy) as client, pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="default", messages=user(prompt), stream=True)
    assert raised.value.status_code == status
    body = raised.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["code"]) == ("server_error", code)
    assert raised.value.response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        # Tools, tool_choice and response_format are relayed since issue 27 (tests/test_tools.py);
        # what stays refused everywhere:
        ({"tools": [{"type": "web_search_preview"}]}, "tools.[0].type"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ],
)
def test_what_cannot_be_relayed_is_a_400_naming_the_field(
    proxy: ProxyServer,
    upstream: FakeUpstreamServer,
    marker: str,
    fields: dict[str, Any],
    param: str,
) -> None:
    with sync_client(proxy) as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="default", messages=user(marker), extra_body=fields)
    assert raised.value.body["param"] == param  # type: ignore[index]
    assert raised.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
    assert param in raised.value.body["message"]  # type: ignore[index]
    assert upstream.find(marker) == []


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
            "messages.[0].content.[0].type",
        ),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
            "messages.[0].content.[0].image_url",
        ),
        ({"role": "function", "content": "42", "name": "f"}, "messages.[0].role"),
    ],
)
def test_non_text_messages_are_a_400_naming_the_part(
    proxy: ProxyServer, message: Any, param: str
) -> None:
    with sync_client(proxy) as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="default", messages=[message])
    assert raised.value.body["param"] == param  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "default", "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        (
            {"model": "default", "messages": [{"role": "user", "content": 5}]},
            "messages.[0].content",
        ),
        (
            {"model": "default", "messages": [{"role": "user", "content": "hi"}], "temperature": 3},
            "temperature",
        ),
    ],
)
async def test_an_invalid_request_is_a_422_in_openais_shape_naming_the_field(
    proxy: ProxyServer, body: dict[str, Any], param: str
) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        param,
        "validation_error",
    )
    assert response.headers["x-request-id"]


async def test_other_routes_keep_the_proxys_error_shape(proxy: ProxyServer) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post("/v1/stream", json={"model": "gpt-nope", "prompt": "hi"})
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"type", "message", "request_id"}


def test_the_upstream_gets_the_conversation_and_options_as_asked(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    messages: Any = [
        {"role": "developer", "content": "Answer in French."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "one "}, {"type": "text", "text": marker}],
        },
    ]
    with sync_client(proxy) as client:
        client.chat.completions.create(
            model="default",
            messages=messages,
            max_completion_tokens=50,
            stop="END",
            temperature=0.5,
            user="user-7",
        )
    (received,) = upstream.find(marker)
    assert received.json["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": f"one {marker}"},
    ]
    assert (received.json["max_tokens"], received.json["stop"]) == (50, ["END"])
    assert received.json["temperature"] == 0.5
    assert "user" not in received.json


# --- the client leaving --------------------------------------------------------------------


@pytest.mark.parametrize("resume", [False, True])
async def test_closing_the_sdk_stream_closes_the_upstream_within_100ms(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str, resume: bool
) -> None:
    # With PROXY_RESUME a resumable stream outlives its client: this route's never is one.
    proxy = start_proxy(resume=resume)
    prompt = f"{marker} @tokens=1000 @delay=0.05"
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(
            model="default",
            messages=user(prompt),
            stream=True,
            extra_headers={"X-Request-ID": marker},
        )
        async for chunk in stream:
            if chunk.choices[0].delta.content:
                break
        closed_at = time.monotonic()
        await stream.close()
        record = await upstream.wait_disconnected(marker)
    assert record.disconnected_at is not None
    assert record.disconnected_at - closed_at < 0.1


async def test_a_client_that_leaves_a_non_streamed_completion_closes_the_upstream(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    prompt = f"{marker} @tokens=1000 @delay=0.05"
    async with async_client(proxy) as client:
        request = asyncio.create_task(
            client.chat.completions.create(model="default", messages=user(prompt))
        )
        await upstream.wait_received(marker)
        request.cancel()
        closed_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await request
    record = await upstream.wait_disconnected(marker)
    assert record.disconnected_at is not None
    assert record.disconnected_at - closed_at < 0.1


# --- the log line --------------------------------------------------------------------------


async def test_the_log_line_names_the_route(
    proxy: ProxyServer,
    marker: str,
    log_lines: list[str],  # noqa: F811
) -> None:
    async with async_client(proxy) as client:
        await client.chat.completions.create(
            model="default", messages=user(marker), extra_headers={"X-Request-ID": marker}
        )
    lines = [orjson.loads(line) for line in log_lines if '"proxy.stream"' in line]
    (line,) = [line for line in lines if line.get("request_id") == marker]
    assert line["route"] == "/v1/chat/completions"
    assert line["outcome"] == "completed"


async def test_a_non_streamed_failure_logs_the_status_the_client_got(
    proxy: ProxyServer,
    marker: str,
    log_lines: list[str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing was sent before the end: the log line says 502, as the client saw, not 200.
    monkeypatch.setattr(opening, "MAX_WHOLE_BYTES", 200)
    prompts = {
        f"{marker}-drop": f"{marker}-drop @fault=drop-mid @after=4",
        f"{marker}-long": f"{marker}-long @tokens=100000 @delay=0.005",
    }
    async with async_client(proxy) as client:
        for rid, prompt in prompts.items():
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(
                    model="default", messages=user(prompt), extra_headers={"X-Request-ID": rid}
                )
    lines = {
        line["request_id"]: line
        for line in map(orjson.loads, (line for line in log_lines if '"proxy.stream"' in line))
        if line.get("request_id") in prompts
    }
    assert lines[f"{marker}-drop"]["status"] == 502
    assert lines[f"{marker}-drop"]["outcome"] == "upstream_error"
    assert lines[f"{marker}-long"]["status"] == 502
    assert lines[f"{marker}-long"]["outcome"] == "upstream_error"
    assert "longer than 200 bytes" in lines[f"{marker}-long"]["error"]


# --- the model list ------------------------------------------------------------------------


def test_the_sdk_lists_the_configured_models(dialects_proxy: ProxyServer) -> None:
    with sync_client(dialects_proxy) as client:
        models = list(client.models.list())
    assert [model.id for model in models] == list(MODELS)
    assert {(model.object, model.owned_by) for model in models} == {("model", "llm-stream-proxy")}
    assert all(model.created > 0 for model in models)


# --- Open WebUI ----------------------------------------------------------------------------


def open_webui_body(marker: str) -> dict[str, Any]:
    """What Open WebUI's OpenAI router posts (backend/open_webui/routers/openai.py): the
    frontend's payload less `metadata`, the model's params applied, the system prompt first,
    `stream_options.include_usage` forced on, and the last message's content made a text part
    with an ephemeral `cache_control` marker."""
    return {
        "model": "default",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": f"{marker} @text=tricky @tokens=20",
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.8,
        "top_p": 0.9,
        "max_tokens": 400,
        "seed": 42,
        "frequency_penalty": 0,
        "logit_bias": {},
        "reasoning": {"effort": "low"},
        "chat_id": "0f6c6d9e-5d0e-4c8a-9d1e-4b0a7c3e2f10",
        "id": "a1b2c3d4-0000-4000-8000-000000000000",
        "session_id": "p2k9s8d7f6g5h4j3",
        "background_tasks": {"title_generation": True},
    }


def sse_data(text: str) -> list[str]:
    """The `data:` of every event of an SSE body."""
    return [event.removeprefix("data: ") for event in text.split("\n\n") if event]


async def test_a_request_shaped_as_open_webui_sends_it_streams_with_usage(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    body = open_webui_body(marker)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200
    *chunks, done = sse_data(response.text)
    assert done == "[DONE]"
    events = [orjson.loads(data) for data in chunks]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == reply_text(f"{marker} @text=tricky @tokens=20", 20)
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["completion_tokens"] == 20
    (received,) = upstream.find(marker)
    assert received.json["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": f"{marker} @text=tricky @tokens=20"},
    ]
    assert (received.json["temperature"], received.json["top_p"]) == (0.8, 0.9)
    assert received.json["max_tokens"] == 400


# --- OpenAI's npm package in Node 22 -------------------------------------------------------


@pytest.fixture(scope="session")
def node() -> str:
    return install_ai_sdk()


async def run_openai_node(node: str, proxy: ProxyServer, model: str, prompt: str) -> dict[str, Any]:
    options = {"url": f"{proxy.url}/v1", "key": KEY, "model": model, "prompt": prompt}
    return await run_node_script(node, AI_SDK_DIRECTORY / "openai_client.mjs", options)


@pytest.mark.parametrize("model", ["chat", "claude"])
async def test_the_npm_sdk_streams_the_exact_text(
    node: str, dialects_proxy: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=40 @split=1 @delay=0.01"
    seen = await run_openai_node(node, dialects_proxy, model, prompt)
    assert seen["error"] is None
    assert seen["text"] == reply_text(prompt, 40)
    assert seen["finishReason"] == "stop"
    assert len(seen["deltas"]) >= 10, "the answer did not stream"


async def test_the_npm_sdk_raises_on_a_failure_mid_stream(
    node: str, dialects_proxy: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @tokens=20 @delay=0.02 @fault=drop-mid @after=6"
    seen = await run_openai_node(node, dialects_proxy, "chat", prompt)
    assert seen["errorType"] == "APIError"
    assert "dropped" in seen["error"]
    assert seen["deltas"]
    assert reply_text(prompt, 20).startswith(seen["text"])
    assert seen["finishReason"] is None


async def test_a_browser_may_call_it_with_openais_sdk_headers(
    start_proxy: Callable[..., ProxyServer],
) -> None:
    proxy = start_proxy(cors_origins="https://chat.example")
    requested = "authorization, content-type, x-stainless-os, x-stainless-retry-count"
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        preflight = await client.options(
            "/v1/chat/completions",
            headers={
                "Origin": "https://chat.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": requested,
            },
        )
    assert preflight.status_code == 200
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert all(header in allowed for header in requested.split(", "))


async def test_a_request_shaped_as_librechat_sends_it_is_answered(
    proxy: ProxyServer, marker: str
) -> None:
    """LibreChat's custom endpoints send OpenAI's defaults (its docs' "Default Parameters"):
    penalties, a `user` id, and a `name` on system and assistant messages."""
    body = {
        "model": "default",
        "temperature": 1,
        "top_p": 1,
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "user": "LibreChat_User_ID",
        "stream": True,
        "messages": [
            {"role": "system", "content": "Be brief.", "name": "Helper"},
            {"role": "user", "content": f"{marker} @text=tricky"},
        ],
    }
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post("/v1/chat/completions", json=body)
    events = [orjson.loads(data) for data in sse_data(response.text)[:-1]]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text == reply_text(f"{marker} @text=tricky", 12)


def test_the_rest_of_openais_api_is_refused_naming_what_is_not_relayed(
    proxy: ProxyServer,
) -> None:
    with sync_client(proxy) as client:
        with pytest.raises(openai.NotFoundError) as embeddings:
            client.embeddings.create(model="default", input="hi")
        # The Responses API is relayed (issue 28): the legacy Completions API stands for the rest.
        with pytest.raises(openai.NotFoundError) as legacy:
            client.completions.create(model="default", prompt="hi")
    assert "embeddings is not relayed" in embeddings.value.message
    assert "the legacy Completions API is not relayed" in legacy.value.message
    assert legacy.value.body["param"] is None  # type: ignore[index]


async def test_a_non_streamed_answer_over_the_memory_bound_is_a_502_and_closes_the_upstream(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SPEC §5b: memory per stream is bounded, even for an answer held until its end.
    monkeypatch.setattr(opening, "MAX_WHOLE_BYTES", 200)
    prompt = f"{marker} @tokens=100000 @delay=0.005"
    async with async_client(proxy) as client:
        with pytest.raises(openai.InternalServerError) as raised:
            await client.chat.completions.create(model="default", messages=user(prompt))
    assert raised.value.status_code == 502
    assert raised.value.body["code"] == "completion_too_large"  # type: ignore[index]
    record = await upstream.wait_disconnected(marker)
    assert record.disconnected_at is not None  # long before its 100000 tokens


# --- the same guards as every stream -------------------------------------------------------


async def test_the_stream_cap_holds_here_too(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(max_concurrent_streams=1, idle_timeout=10)
    async with async_client(proxy) as client:
        held = await client.chat.completions.create(
            model="default", messages=user(f"{marker} @fault=hang-mid @after=1"), stream=True
        )
        with pytest.raises(openai.InternalServerError) as raised:
            await client.chat.completions.create(model="default", messages=user(marker))
        await held.close()
    assert raised.value.status_code == 503
    assert raised.value.body["code"] == "overloaded"  # type: ignore[index]
    assert raised.value.response.headers["retry-after"] == "1"


def test_a_client_keys_rate_limit_holds_here_too(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(api_keys=KEY, rate_limit="2/minute")
    with sync_client(proxy) as client:
        for _ in range(2):
            client.chat.completions.create(model="default", messages=user(marker))
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="default", messages=user(marker))
    assert raised.value.body["code"] == "rate_limited"  # type: ignore[index]
    assert int(raised.value.response.headers["retry-after"]) >= 1


def test_failed_attempts_before_the_first_token_are_retried(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    prompt = f"{marker} @text=tricky @fault=status @status=503 @fail_times=2"
    with sync_client(proxy) as client:
        stream = client.chat.completions.create(model="default", messages=user(prompt), stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == reply_text(prompt, 12)
    assert len(upstream.find(marker)) == 3


async def test_its_streams_are_counted_in_the_metrics(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy()
    async with async_client(proxy) as client:
        await client.chat.completions.create(model="default", messages=user(marker))
        stream = await client.chat.completions.create(
            model="default", messages=user(marker), stream=True
        )
        [chunk async for chunk in stream]
    result = await scrape_when(proxy, lambda scrape: total_streams(scrape) >= 2)
    assert result.table("llm_proxy_streams_total", "model", "outcome") == {
        ("default", "completed"): 2
    }
    assert result.value("llm_proxy_stream_bytes_total") == 2 * len(reply_text(marker, 12).encode())
