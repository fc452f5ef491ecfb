"""Every dialect's wire format: exactly the reply text, framed as that API frames it."""

from __future__ import annotations

import httpx
import orjson

from proxy.fake_upstream import (
    RecordingFakeUpstream,
    reply_text,
)
from tests.fake_upstream.readers import (
    CHAT,
    DIALECTS,
    TOKENS,
    Dialect,
    dechunk,
    each_dialect,
    post,
    raw_exchange,
    raw_post,
    without_head,
)


@each_dialect
async def test_streams_exactly_the_reply_text(client: httpx.AsyncClient, dialect: Dialect) -> None:
    prompt = "tell me @text=tricky @tokens=30"
    response = await post(client, dialect, prompt)
    assert response.status_code == 200
    assert response.headers["content-type"] == dialect.content_type
    assert response.headers["transfer-encoding"] == "chunked"
    assert dialect.read(response.content) == (reply_text(prompt, 30), True)


async def test_defaults_to_the_constructors_token_count(client: httpx.AsyncClient) -> None:
    response = await post(client, CHAT, "plain @text=tricky")
    assert CHAT.read(response.content) == (reply_text("plain @text=tricky", TOKENS), True)


async def test_echoes_the_requested_model_or_fake(client: httpx.AsyncClient) -> None:
    named = CHAT.events((await post(client, CHAT, "hi")).content)
    unnamed = CHAT.events((await client.post(CHAT.path, json={"messages": []})).content)
    assert {event["model"] for event in named[:-1]} == {"m"}
    assert {event["model"] for event in unnamed[:-1]} == {"fake"}


async def test_openai_sends_a_role_chunk_and_a_keep_alive_comment_first(
    client: httpx.AsyncClient,
) -> None:
    body = (await post(client, CHAT, "hi")).content
    first_event, second_event = body.split(b"\n\n")[:2]
    role = {"role": "assistant", "content": ""}
    assert orjson.loads(first_event.removeprefix(b"data: "))["choices"][0]["delta"] == role
    assert second_event == b": keep-alive"


async def test_tgi_sends_a_special_token_and_the_generated_text(
    client: httpx.AsyncClient,
) -> None:
    tgi = DIALECTS["tgi"]
    events = tgi.events((await post(client, tgi, "hi @text=tricky")).content)
    assert [e["token"]["text"] for e in events if e["token"]["special"]] == ["<|special|>", "</s>"]
    assert events[-1]["generated_text"] == reply_text("hi @text=tricky", TOKENS)


async def test_prompt_is_the_last_user_message_with_text_blocks_joined(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient
) -> None:
    blocks = [{"type": "text", "text": "second "}, {"type": "text", "text": "turn"}]
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": blocks},
    ]
    response = await client.post("/v1/messages", json={"model": "m", "messages": messages})
    assert fake.records[-1].prompt == "second turn"
    assert DIALECTS["anthropic"].read(response.content) == (reply_text("second turn", TOKENS), True)


@each_dialect
async def test_split_replies_read_the_same(client: httpx.AsyncClient, dialect: Dialect) -> None:
    prompt = "tell me @text=tricky @tokens=20 @split=3"
    response = await post(client, dialect, prompt)
    assert dialect.read(response.content) == (reply_text(prompt, 20), True)


async def test_split_sends_every_piece_as_its_own_chunk(fake: RecordingFakeUpstream) -> None:
    prompt = "tell me @text=tricky @tokens=20 @split=3"
    response = await raw_exchange(fake, raw_post(CHAT.path, CHAT.request(prompt), close=True))
    sizes, body, rest = dechunk(without_head(response))
    assert max(sizes) == 3
    assert rest == b""
    assert CHAT.read(body) == (reply_text(prompt, 20), True)


MAX_TOKENS_FIELDS = {
    "openai": {"max_tokens": 5},
    "openai-completions": {"max_tokens": 5},
    "anthropic": {"max_tokens": 5},
    "ollama": {"options": {"num_predict": 5}},
    "tgi": {"parameters": {"max_new_tokens": 5}},
}


@each_dialect
async def test_a_reply_stops_at_the_requests_max_tokens_unless_told_to_ignore_them(
    client: httpx.AsyncClient, dialect: Dialect
) -> None:
    name = next(name for name, known in DIALECTS.items() if known is dialect)
    for prompt, tokens in (
        ("cap @text=tricky @tokens=30", 5),
        ("@ignore_max_tokens=1 @tokens=30", 30),
    ):
        body = {**dialect.request(prompt), **MAX_TOKENS_FIELDS[name]}
        response = await client.post(dialect.path, json=body)
        assert dialect.read(response.content) == (reply_text(prompt, tokens), True)
