"""What a prompt asks of the fake: parsing its directives, and every fault in every dialect."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from proxy.fake_upstream import (
    Directives,
    RecordingFakeUpstream,
    reply_text,
)
from tests.fake_upstream.readers import (
    CHAT,
    DIALECTS,
    TOKENS,
    Dialect,
    each_dialect,
    post,
)


def test_directives_are_whitespace_separated_words() -> None:
    prompt = "a @tokens=0 @delay=0.5 @fault=drop-mid x@after=9"
    parsed = Directives.parse(prompt, tokens=7, delay=0)
    assert (parsed.tokens, parsed.delay, parsed.fault, parsed.after) == (0, 0.5, "drop-mid", 2)


def test_malformed_and_unknown_directives_keep_the_defaults() -> None:
    prompt = "@tokens=lots @fault=fire @split=0 @colour=red"
    parsed = Directives.parse(prompt, tokens=7, delay=1)
    assert (parsed.tokens, parsed.delay, parsed.fault, parsed.split) == (7, 1, None, 0)


def test_text_is_friendly_unless_the_prompt_asks_for_the_tricky_text() -> None:
    def text(prompt: str) -> str:
        return Directives.parse(prompt, tokens=None, delay=0).text

    assert [text("hi"), text("hi @text=tricky"), text("hi @text=emoji")] == [
        "friendly",
        "tricky",
        "friendly",
    ]


def test_without_a_token_count_the_whole_reply_is_asked_for() -> None:
    assert Directives.parse("hi @delay=1", tokens=None, delay=0).tokens is None
    assert Directives.parse("hi @tokens=3", tokens=None, delay=0).tokens == 3


# Faults

OPENAI_429 = {"error": {"message": "fake upstream error", "type": "rate_limit_error", "code": None}}
ERRORS_429 = {
    "openai": OPENAI_429,
    "openai-completions": OPENAI_429,
    "ollama": {"error": "fake upstream error"},
    "tgi": {"error": "fake upstream error", "error_type": "overloaded"},
    "anthropic": {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "fake upstream error"},
    },
}


@pytest.mark.parametrize(("name", "error"), ERRORS_429.items(), ids=ERRORS_429.keys())
async def test_status_fault_sends_the_status_a_dialect_error_and_retry_after(
    client: httpx.AsyncClient, name: str, error: Any
) -> None:
    response = await post(client, DIALECTS[name], "x @fault=status @status=429 @retry_after=7")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json() == error


async def test_status_fault_defaults_to_500(client: httpx.AsyncClient) -> None:
    response = await post(client, CHAT, "x @fault=status")
    assert response.status_code == 500
    error = {"message": "fake upstream error", "type": "server_error", "code": None}
    assert response.json() == {"error": error}
    assert "retry-after" not in response.headers


async def test_status_fault_can_echo_the_credential(client: httpx.AsyncClient) -> None:
    headers = {"Authorization": "Bearer sk-echoed"}
    response = await client.post(
        CHAT.path, json=CHAT.request("x @fault=status @echo_auth=1"), headers=headers
    )
    assert "Bearer sk-echoed" in response.json()["error"]["message"]


async def test_fail_times_fails_once_then_serves(client: httpx.AsyncClient) -> None:
    prompt = "again @text=tricky @fault=status @status=503 @fail_times=1"
    first, second = [await post(client, CHAT, prompt) for _ in range(2)]
    assert (first.status_code, second.status_code) == (503, 200)
    assert CHAT.read(second.content) == (reply_text(prompt, TOKENS), True)


@each_dialect
async def test_drop_mid_breaks_the_body(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient, dialect: Dialect
) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        await post(client, dialect, "x @fault=drop-mid @after=2")
    (record,) = fake.records
    assert record.finished_at is not None
    assert record.disconnected_at is None  # the fake left, not the client


@each_dialect
async def test_no_end_ends_the_body_without_the_end_marker(
    client: httpx.AsyncClient, dialect: Dialect
) -> None:
    prompt = "x @text=tricky @fault=no-end"
    response = await post(client, dialect, prompt)
    assert response.status_code == 200
    assert dialect.read(response.content) == (reply_text(prompt, TOKENS), False)


def is_readable(payload: bytes) -> bool:
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload == b"[DONE]"
    return True


@each_dialect
async def test_malformed_sends_one_unreadable_event_then_ends(
    client: httpx.AsyncClient, dialect: Dialect
) -> None:
    prompt = "x @text=tricky @fault=malformed @after=1"
    payloads = dialect.payloads((await post(client, dialect, prompt)).content)
    assert len([payload for payload in payloads if not is_readable(payload)]) == 1
    events = [dialect.event(payload) for payload in payloads if is_readable(payload)]
    assert "".join(map(dialect.text_of, events)) == reply_text(prompt, TOKENS)
    assert dialect.is_end(events[-1])


@each_dialect
async def test_error_event_arrives_in_band_after_k_tokens(
    client: httpx.AsyncClient, dialect: Dialect
) -> None:
    prompt = "x @text=tricky @fault=error-event @after=2"
    response = await post(client, dialect, prompt)
    assert response.status_code == 200
    *events, error = dialect.events(response.content)
    assert "error" in error
    assert "".join(map(dialect.text_of, events)) == reply_text(prompt, 2)


@each_dialect
async def test_model_missing_is_an_ollama_404_ignored_elsewhere(
    client: httpx.AsyncClient, dialect: Dialect
) -> None:
    response = await post(client, dialect, "x @model_missing=1")
    if dialect is DIALECTS["ollama"]:
        assert response.status_code == 404
        assert response.json() == {"error": 'model "m" not found, try pulling it first'}
    else:
        assert response.status_code == 200
