"""The fake upstream: every dialect, its faults, and behaving like a real HTTP/1.1 server.

Each test talks to its own fake over a real loopback socket, on the test's event loop (the
suite's shared fake runs on uvloop, in tests/servers.py; one test here runs on uvloop too).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import uvloop

from proxy.fake_upstream import VOCABULARY, Directives, FakeUpstream, reply_text, reply_tokens

TOKENS = 5


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream(tokens=TOKENS)
    await server.start()
    yield server
    await server.aclose()


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=5) as client:
        yield client


# Throwaway readers of each wire format: whole bodies in, events and text out.


def sse_payloads(body: bytes) -> list[bytes]:
    """The `data:` fields of an SSE body, with or without the space after the colon."""
    lines = body.split(b"\n")
    return [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]


def ndjson_payloads(body: bytes) -> list[bytes]:
    return [line for line in body.split(b"\n") if line]


def chat_request(prompt: str) -> dict[str, Any]:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]
    return {"model": "m", "stream": True, "messages": messages}


def openai_text(event: Any) -> str:
    if event == "[DONE]" or "error" in event:
        return ""
    choice = event["choices"][0]
    return str(choice["delta"].get("content", "") if "delta" in choice else choice["text"])


def ollama_text(event: Any) -> str:
    return str(event["message"]["content"]) if "message" in event else ""


def tgi_text(event: Any) -> str:
    token = event.get("token")
    return "" if token is None or token["special"] else str(token["text"])


def anthropic_text(event: Any) -> str:
    return str(event["delta"]["text"]) if event.get("type") == "content_block_delta" else ""


@dataclass(frozen=True)
class Dialect:
    path: str
    content_type: str
    request: Callable[[str], dict[str, Any]]
    payloads: Callable[[bytes], list[bytes]]
    text_of: Callable[[Any], str]
    is_end: Callable[[Any], bool]

    def event(self, payload: bytes) -> Any:
        return "[DONE]" if payload == b"[DONE]" else orjson.loads(payload)

    def events(self, body: bytes) -> list[Any]:
        return [self.event(payload) for payload in self.payloads(body)]

    def read(self, body: bytes) -> tuple[str, bool]:
        """The text of a reply, and whether it ended with the dialect's end marker."""
        events = self.events(body)
        text = "".join(map(self.text_of, events))
        return text, bool(events) and self.is_end(events[-1])


DIALECTS = {
    "openai": Dialect(
        "/v1/chat/completions",
        "text/event-stream",
        chat_request,
        sse_payloads,
        openai_text,
        lambda event: event == "[DONE]",
    ),
    "openai-completions": Dialect(
        "/v1/completions",
        "text/event-stream",
        lambda prompt: {"model": "m", "stream": True, "prompt": prompt},
        sse_payloads,
        openai_text,
        lambda event: event == "[DONE]",
    ),
    "ollama": Dialect(
        "/api/chat",
        "application/x-ndjson",
        chat_request,
        ndjson_payloads,
        ollama_text,
        lambda event: event.get("done") is True,
    ),
    "tgi": Dialect(
        "/generate_stream",
        "text/event-stream",
        lambda prompt: {"inputs": prompt, "parameters": {"max_new_tokens": 20}},
        sse_payloads,
        tgi_text,
        lambda event: event.get("generated_text") is not None,
    ),
    "anthropic": Dialect(
        "/v1/messages",
        "text/event-stream",
        chat_request,
        sse_payloads,
        anthropic_text,
        lambda event: event.get("type") == "message_stop",
    ),
}
each_dialect = pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())

CHAT = DIALECTS["openai"]


async def post(client: httpx.AsyncClient, dialect: Dialect, prompt: str) -> httpx.Response:
    return await client.post(dialect.path, json=dialect.request(prompt))


def open_stream(
    client: httpx.AsyncClient, dialect: Dialect, prompt: str
) -> AbstractAsyncContextManager[httpx.Response]:
    return client.stream("POST", dialect.path, json=dialect.request(prompt))


async def raw_exchange(fake: FakeUpstream, request: bytes) -> bytes:
    """Everything a raw socket gets back for request, until the fake closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
    writer.write(request)
    try:
        return await reader.read(-1)
    finally:
        writer.close()


def raw_post(path: str, body: Any, *, close: bool = False) -> bytes:
    content = orjson.dumps(body)
    connection = b"Connection: close\r\n" if close else b""
    return b"POST %b HTTP/1.1\r\nHost: fake\r\nContent-Length: %d\r\n%b\r\n%b" % (
        path.encode(),
        len(content),
        connection,
        content,
    )


def dechunk(data: bytes) -> tuple[list[int], bytes, bytes]:
    """Chunk sizes, the body, and what follows the terminating chunk."""
    sizes: list[int] = []
    body = b""
    while True:
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return sizes, body, data.removeprefix(b"\r\n")
        sizes.append(size)
        body += data[:size]
        assert data[size : size + 2] == b"\r\n"
        data = data[size + 2 :]


def without_head(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


# The reply itself


def test_reply_is_deterministic_and_seeded_by_the_prompt() -> None:
    assert reply_tokens("hi", 50) == reply_tokens("hi", 50)
    assert reply_tokens("hi", 50) != reply_tokens("hi @tokens=50", 50)
    assert reply_text("hi", 3) == "".join(reply_tokens("hi", 3))


def test_vocabulary_exercises_every_trap() -> None:
    traps = ["\n", "\r\n", "\r", "\u2028", "\u0085", "\x0c", ":", "data: "]
    assert all(trap in VOCABULARY for trap in traps)
    assert any('"' in token and "\\" in token for token in VOCABULARY)
    assert {len(char.encode()) for token in VOCABULARY for char in token} == {1, 2, 3, 4}
    assert any(token.startswith(" ") and token[1:].isalpha() for token in VOCABULARY)


def test_directives_are_whitespace_separated_words() -> None:
    prompt = "a @tokens=0 @delay=0.5 @fault=drop-mid x@after=9"
    parsed = Directives.parse(prompt, tokens=7, delay=0)
    assert (parsed.tokens, parsed.delay, parsed.fault, parsed.after) == (0, 0.5, "drop-mid", 2)


def test_malformed_and_unknown_directives_keep_the_defaults() -> None:
    prompt = "@tokens=lots @fault=fire @split=0 @colour=red"
    parsed = Directives.parse(prompt, tokens=7, delay=1)
    assert (parsed.tokens, parsed.delay, parsed.fault, parsed.split) == (7, 1, None, 0)


# Happy paths


@each_dialect
async def test_streams_exactly_the_reply_text(client: httpx.AsyncClient, dialect: Dialect) -> None:
    prompt = "tell me @tokens=30"
    response = await post(client, dialect, prompt)
    assert response.status_code == 200
    assert response.headers["content-type"] == dialect.content_type
    assert response.headers["transfer-encoding"] == "chunked"
    assert dialect.read(response.content) == (reply_text(prompt, 30), True)


async def test_defaults_to_the_constructors_token_count(client: httpx.AsyncClient) -> None:
    response = await post(client, CHAT, "plain")
    assert CHAT.read(response.content) == (reply_text("plain", TOKENS), True)


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
    events = tgi.events((await post(client, tgi, "hi")).content)
    assert [e["token"]["text"] for e in events if e["token"]["special"]] == ["<|special|>", "</s>"]
    assert events[-1]["generated_text"] == reply_text("hi", TOKENS)


async def test_prompt_is_the_last_user_message_with_text_blocks_joined(
    fake: FakeUpstream, client: httpx.AsyncClient
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
    prompt = "tell me @tokens=20 @split=3"
    response = await post(client, dialect, prompt)
    assert dialect.read(response.content) == (reply_text(prompt, 20), True)


async def test_split_sends_every_piece_as_its_own_chunk(fake: FakeUpstream) -> None:
    prompt = "tell me @tokens=20 @split=3"
    response = await raw_exchange(fake, raw_post(CHAT.path, CHAT.request(prompt), close=True))
    sizes, body, rest = dechunk(without_head(response))
    assert max(sizes) == 3
    assert rest == b""
    assert CHAT.read(body) == (reply_text(prompt, 20), True)


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
    prompt = "again @fault=status @status=503 @fail_times=1"
    first, second = [await post(client, CHAT, prompt) for _ in range(2)]
    assert (first.status_code, second.status_code) == (503, 200)
    assert CHAT.read(second.content) == (reply_text(prompt, TOKENS), True)


@each_dialect
async def test_drop_mid_breaks_the_body(
    fake: FakeUpstream, client: httpx.AsyncClient, dialect: Dialect
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
    prompt = "x @fault=no-end"
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
    prompt = "x @fault=malformed @after=1"
    payloads = dialect.payloads((await post(client, dialect, prompt)).content)
    assert len([payload for payload in payloads if not is_readable(payload)]) == 1
    events = [dialect.event(payload) for payload in payloads if is_readable(payload)]
    assert "".join(map(dialect.text_of, events)) == reply_text(prompt, TOKENS)
    assert dialect.is_end(events[-1])


@each_dialect
async def test_error_event_arrives_in_band_after_k_tokens(
    client: httpx.AsyncClient, dialect: Dialect
) -> None:
    prompt = "x @fault=error-event @after=2"
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


# Clients leaving


@pytest.mark.parametrize(
    ("prompt", "body_arrives"),
    [
        ("@fault=hang-before", False),
        ("@fault=hang-mid @after=1", True),
        ("@tokens=3 @delay=30", True),
        ("@tokens=2000000", True),  # while the fake writes as fast as it can
    ],
)
async def test_client_leaving_mid_reply_is_recorded(
    fake: FakeUpstream, client: httpx.AsyncClient, marker: str, prompt: str, body_arrives: bool
) -> None:
    async with open_stream(client, CHAT, f"{marker} {prompt}") as response:
        assert response.status_code == 200
        if body_arrives:
            await anext(response.aiter_raw())
        # Leaving with the body unread: httpx closes the connection.
    record = await fake.wait_disconnected(marker, timeout=2)
    assert record.disconnected_at is not None
    assert record.finished_at is None


async def test_client_leaving_before_the_headers_is_recorded(
    fake: FakeUpstream, client: httpx.AsyncClient, marker: str
) -> None:
    request = asyncio.create_task(post(client, CHAT, f"{marker} @fault=hang-headers"))
    await fake.wait_received(marker, timeout=2)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    record = await fake.wait_disconnected(marker, timeout=2)
    assert record.disconnected_at is not None
    assert record.finished_at is None


async def test_closing_after_a_complete_reply_is_not_a_disconnect(
    fake: FakeUpstream, client: httpx.AsyncClient, marker: str
) -> None:
    await post(client, CHAT, marker)
    await client.aclose()
    (record,) = fake.find(marker)
    assert record.finished_at is not None
    assert record.disconnected_at is None


async def test_aclose_drops_open_connections() -> None:
    fake = FakeUpstream()
    await fake.start()
    async with (
        httpx.AsyncClient(base_url=fake.url) as client,
        open_stream(client, CHAT, "@fault=hang-before") as response,
    ):
        await fake.aclose()
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()


# An HTTP/1.1 server


async def test_records_the_request_as_received(
    fake: FakeUpstream, client: httpx.AsyncClient, marker: str
) -> None:
    body = CHAT.request(marker)
    await client.post(CHAT.path, json=body, headers={"Authorization": "Bearer sk-test"})
    (record,) = fake.find(marker)
    assert (record.method, record.path, record.prompt) == ("POST", CHAT.path, marker)
    assert record.headers["authorization"] == "Bearer sk-test"
    assert record.json == body
    assert orjson.loads(record.body) == body
    assert record.finished_at is not None
    assert record.received_at <= record.finished_at


async def test_keeps_the_connection_alive(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    statuses = [
        (await post(client, CHAT, "one")).status_code,
        (await post(client, CHAT, "two @fault=status @status=502")).status_code,
        (await client.get("/v1/models")).status_code,
        (await post(client, CHAT, "three @fault=no-end")).status_code,
    ]
    assert statuses == [200, 502, 200, 200]
    assert fake.connections_accepted == 1


async def test_answers_pipelined_requests_in_order(fake: FakeUpstream) -> None:
    first = raw_post(CHAT.path, CHAT.request("first @delay=0.01"))
    second = raw_post(CHAT.path, CHAT.request("second"), close=True)
    response = await raw_exchange(fake, first + second)
    _, first_body, rest = dechunk(without_head(response))
    _, second_body, rest = dechunk(without_head(rest))
    assert CHAT.read(first_body) == (reply_text("first @delay=0.01", TOKENS), True)
    assert CHAT.read(second_body) == (reply_text("second", TOKENS), True)
    assert rest == b""


async def test_answers_probes(client: httpx.AsyncClient) -> None:
    models = await client.get("/v1/models")
    assert models.json() == {"object": "list", "data": [{"id": "fake"}]}
    assert (await client.get("/")).status_code == 404


async def test_rejects_unknown_paths_and_bodies_that_are_not_json(
    client: httpx.AsyncClient,
) -> None:
    unknown = await client.post("/v1/nope", json={})
    not_json = await client.post(CHAT.path, content=b"{", headers={"Content-Type": "text/plain"})
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/json"
    assert not_json.status_code == 400
    assert "error" in not_json.json()


async def test_rejects_a_malformed_http_request(fake: FakeUpstream) -> None:
    response = await raw_exchange(fake, b"NOT HTTP AT ALL\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")


def test_serves_every_dialect_on_uvloop() -> None:
    async def scenario() -> None:
        fake = FakeUpstream(tokens=TOKENS)
        await fake.start()
        try:
            async with httpx.AsyncClient(base_url=fake.url) as client:
                for dialect in DIALECTS.values():
                    response = await post(client, dialect, "uv @split=7")
                    assert dialect.read(response.content) == (reply_text("uv @split=7", 5), True)
                async with open_stream(client, CHAT, "uv-leaves @fault=hang-mid") as response:
                    await anext(response.aiter_raw())
            assert (await fake.wait_disconnected("uv-leaves", timeout=2)).disconnected_at
        finally:
            await fake.aclose()

    uvloop.run(scenario())
