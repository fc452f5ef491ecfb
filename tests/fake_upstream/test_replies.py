"""What the fake says: the friendly reply by default, the tricky text by directive."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from proxy.fake_upstream import VOCABULARY, FakeUpstream, friendly_text, reply_text, reply_tokens
from tests.fake_upstream.readers import Dialect, each_dialect, post


def test_reply_is_deterministic_and_seeded_by_the_prompt() -> None:
    assert reply_tokens("hi @text=tricky", 50) == reply_tokens("hi @text=tricky", 50)
    assert reply_tokens("hi @text=tricky", 50) != reply_tokens("hi @text=tricky @tokens=50", 50)
    assert reply_text("hi @text=tricky", 3) == "".join(reply_tokens("hi @text=tricky", 3))


def test_vocabulary_exercises_every_trap() -> None:
    traps = ["\n", "\r\n", "\r", "\u2028", "\u0085", "\x0c", ":", "data: "]
    assert all(trap in VOCABULARY for trap in traps)
    assert any('"' in token and "\\" in token for token in VOCABULARY)
    assert {len(char.encode()) for token in VOCABULARY for char in token} == {1, 2, 3, 4}
    assert any(token.startswith(" ") and token[1:].isalpha() for token in VOCABULARY)


def test_tricky_text_is_the_vocabulary_and_only_by_directive() -> None:
    tricky = reply_tokens("hi @text=tricky")
    assert len(tricky) == len(VOCABULARY)
    assert set(tricky) == set(VOCABULARY)
    assert not set(reply_tokens("hi")) & {"data: ", "\r\n", "\u2028", " 🚀"}


def test_friendly_reply_says_what_answered_echoes_the_prompt_and_how_to_reach_a_real_api() -> None:
    text = reply_text("Tell me about streams @delay=0.5")
    assert text.startswith("Hello! This is the built-in fake upstream of llm-stream-proxy")
    assert "\nYou said: “Tell me about streams”\n" in text
    assert "PROXY_UPSTREAM_URL" in text
    assert "@delay" not in text


def test_friendly_reply_is_plain_printable_lines() -> None:
    text = reply_text("Hello")
    assert text.endswith(".\n")
    assert all(line.isprintable() for line in text.split("\n"))
    assert "data:" not in text


def test_friendly_reply_echoes_only_the_start_of_a_long_prompt() -> None:
    many_words = " ".join(f"w{i}" for i in range(30))
    assert "“w0 w1 w2 w3 w4 w5 w6 w7 …”" in reply_text(many_words)
    assert f"“{'x' * 80} …”" in reply_text("x" * 10_000)
    assert "Your prompt had no words." in reply_text("@tokens=100")


def test_friendly_reply_streams_word_by_word_and_starts_over_past_its_end() -> None:
    words = reply_tokens("hi")
    assert "".join(words) == friendly_text("hi")
    assert len(words) > 20
    assert reply_tokens("hi", 2 * len(words)) == words + words
    assert reply_tokens("hi @tokens=3") == words[:3]


@pytest.fixture
async def plain_fake() -> AsyncIterator[FakeUpstream]:
    """As the proxy embeds it: no token count, no recording."""
    server = FakeUpstream()
    await server.start()
    yield server
    await server.aclose()


@each_dialect
async def test_without_directives_every_dialect_streams_the_whole_friendly_reply(
    plain_fake: FakeUpstream, dialect: Dialect
) -> None:
    async with httpx.AsyncClient(base_url=plain_fake.url, timeout=5) as client:
        response = await post(client, dialect, "What is this?")
    assert dialect.read(response.content) == (friendly_text("What is this?"), True)
