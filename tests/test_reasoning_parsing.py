"""Each reasoning dialect's parser (issue 26): any split of a stream of reasoning then text,
UTF-8 inside both, gives exactly the same two channels, in order."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.conversation import Conversation, Message
from proxy.dialects import get_dialect
from proxy.parts import Part, Reasoning, ReasoningSignature
from tests.splits import cuts, split_at, token_text
from tests.test_dialects import model, sse


def openai_thinking(field: str) -> Callable[[list[str], list[str]], bytes]:
    def stream(thoughts: list[str], tokens: list[str]) -> bytes:
        def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
            return sse({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        body = chunk({"role": "assistant", "content": ""})
        body += b"".join(chunk({field: t, "content": None}) for t in thoughts)
        # Servers that send both fields leave the other null or empty: no part of it.
        body += b"".join(chunk({"content": t, field: None}) for t in tokens)
        return body + chunk({}, "stop") + b"data: [DONE]\n\n"

    return stream


def anthropic_thinking(thoughts: list[str], tokens: list[str]) -> bytes:
    def delta(index: int, payload: dict[str, str]) -> bytes:
        return sse(
            {"type": "content_block_delta", "index": index, "delta": payload}, "content_block_delta"
        )

    body = sse({"type": "message_start", "message": {"id": "m"}}, "message_start")
    start = {"type": "thinking", "thinking": "", "signature": ""}
    body += sse(
        {"type": "content_block_start", "index": 0, "content_block": start}, "content_block_start"
    )
    body += b"".join(delta(0, {"type": "thinking_delta", "thinking": t}) for t in thoughts)
    body += delta(0, {"type": "signature_delta", "signature": "c2lnbmF0dXJl"})
    body += sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    redacted = {"type": "redacted_thinking", "data": "b3BhcXVl"}
    body += sse(
        {"type": "content_block_start", "index": 1, "content_block": redacted},
        "content_block_start",
    )
    body += sse({"type": "content_block_stop", "index": 1}, "content_block_stop")
    text = {"type": "text", "text": ""}
    body += sse(
        {"type": "content_block_start", "index": 2, "content_block": text}, "content_block_start"
    )
    body += b"".join(delta(2, {"type": "text_delta", "text": t}) for t in tokens)
    body += sse({"type": "content_block_stop", "index": 2}, "content_block_stop")
    body += sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}, "message_delta")
    return body + sse({"type": "message_stop"}, "message_stop")


def ollama_thinking(thoughts: list[str], tokens: list[str]) -> bytes:
    lines: list[dict[str, object]] = [
        {"message": {"role": "assistant", "content": "", "thinking": t}, "done": False}
        for t in thoughts
    ]
    lines += [{"message": {"role": "assistant", "content": t}, "done": False} for t in tokens]
    lines.append({"message": {"role": "assistant", "content": ""}, "done": True})
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


THINKING_STREAMS: dict[str, tuple[str, Callable[[list[str], list[str]], bytes]]] = {
    "openai reasoning_content": ("openai", openai_thinking("reasoning_content")),
    "openai reasoning": ("openai", openai_thinking("reasoning")),
    "anthropic": ("anthropic", anthropic_thinking),
    "ollama": ("ollama", ollama_thinking),
}


def channels(dialect: str, pieces: list[bytes]) -> tuple[str, str, list[type], bool]:
    """Reasoning and text as read, the kinds in the order they came, and whether complete."""
    parser = get_dialect(dialect).parser(1_048_576)
    parts: list[Part] = []
    for piece in pieces:
        read, failure = parser.feed(piece)
        assert failure is None, failure
        parts += read
    read, failure = parser.close()
    assert failure is None, failure
    parts += read
    reasoning = "".join(part.text for part in parts if isinstance(part, Reasoning))
    text = "".join(part for part in parts if isinstance(part, str))
    # A signature (anthropic's, issue 29) seals the reasoning: neither channel's order.
    kinds = [type(part) for part in parts if not isinstance(part, ReasoningSignature)]
    order = [kind for index, kind in enumerate(kinds) if index == 0 or kinds[index - 1] != kind]
    return reasoning, text, order, parser.complete


@pytest.mark.parametrize("stream", THINKING_STREAMS)
@given(
    thoughts=st.lists(token_text, max_size=15),
    tokens=st.lists(token_text, max_size=15),
    cut_points=cuts,
)
def test_any_split_gives_the_same_reasoning_then_text(
    stream: str, thoughts: list[str], tokens: list[str], cut_points: list[int]
) -> None:
    dialect, render = THINKING_STREAMS[stream]
    body = render(thoughts, tokens)
    reasoning, text, order, complete = channels(dialect, split_at(body, cut_points))
    assert (reasoning, text, complete) == ("".join(thoughts), "".join(tokens), True)
    expected_order = [kind for kind, given in ((Reasoning, reasoning), (str, text)) if given]
    assert order == expected_order


@pytest.mark.parametrize("stream", THINKING_STREAMS)
def test_multibyte_reasoning_split_at_every_byte(stream: str) -> None:
    dialect, render = THINKING_STREAMS[stream]
    thoughts, tokens = ["é", "世界", "🙂 ", "\u2028"], ["𝄞", "\u0085", "ok"]
    body = render(thoughts, tokens)
    for point in range(len(body) + 1):
        reasoning, text, _, complete = channels(dialect, [body[:point], body[point:]])
        assert (reasoning, text, complete) == ("é世界🙂 \u2028", "𝄞\u0085ok", True)


def test_anthropic_signature_is_a_part_after_its_reasoning_at_any_split() -> None:
    """The thinking block's `signature_delta` is relayed whole, after the thoughts it seals
    and before the text (issue 29): a Messages API client sends it back."""
    body = anthropic_thinking(["é", "世界"], ["ok"])
    for point in range(0, len(body) + 1, 7):
        parser = get_dialect("anthropic").parser(1_048_576)
        parts: list[Part] = []
        for piece in (body[:point], body[point:]):
            read, failure = parser.feed(piece)
            assert failure is None
            parts += read
        signatures = [i for i, part in enumerate(parts) if isinstance(part, ReasoningSignature)]
        assert [parts[i] for i in signatures] == [ReasoningSignature("c2lnbmF0dXJl")]
        reasoning = [i for i, part in enumerate(parts) if isinstance(part, Reasoning)]
        text = [i for i, part in enumerate(parts) if isinstance(part, str)]
        assert max(reasoning) < signatures[0] < min(text)


def test_reasoning_sent_as_an_object_is_no_part() -> None:
    """Some gateways send reasoning as an object: never a crash, never text (issue 26)."""
    body = sse({"choices": [{"index": 0, "delta": {"reasoning": {"summary": "x"}}}]})
    body += sse({"choices": [{"index": 0, "delta": {"reasoning_content": ""}}]})
    body += sse({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]})
    reasoning, text, _, complete = channels("openai", [body + b"data: [DONE]\n\n"])
    assert (reasoning, text, complete) == ("", "hi", True)


def test_openai_usage_keeps_the_reasoning_tokens() -> None:
    parser = get_dialect("openai").parser(1_048_576)
    usage = {
        "prompt_tokens": 3,
        "completion_tokens": 9,
        "completion_tokens_details": {"reasoning_tokens": 5},
    }
    parser.feed(sse({"choices": [], "usage": usage}))
    assert (parser.usage.completion_tokens, parser.usage.reasoning_tokens) == (9, 5)


CONVERSATION = Conversation(messages=(Message("user", "hi"),), max_tokens=4096)


@pytest.mark.parametrize(
    ("dialect", "effort", "expected"),
    [
        ("openai", "high", {"reasoning_effort": "high"}),
        ("openai", "none", {"reasoning_effort": "none"}),
        ("ollama", "low", {"think": True}),
        ("ollama", "none", {"think": False}),
        ("anthropic", "medium", {"thinking": {"type": "enabled", "budget_tokens": 4095}}),
        ("anthropic", "minimal", {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
        ("anthropic", "none", {"thinking": {"type": "disabled"}}),
    ],
)
def test_each_dialect_asks_for_reasoning_its_own_way(
    dialect: str, effort: str, expected: dict[str, object]
) -> None:
    conversation = Conversation(
        messages=CONVERSATION.messages,
        max_tokens=4096,
        reasoning=effort,  # type: ignore[arg-type]
    )
    body = get_dialect(dialect).build_request(model(dialect), conversation).json  # type: ignore[arg-type]
    assert {key: body[key] for key in expected} == expected


@pytest.mark.parametrize("dialect", ["openai", "ollama", "anthropic", "tgi", "openai-completions"])
def test_no_reasoning_asked_sends_nothing_about_it(dialect: str) -> None:
    body = get_dialect(dialect).build_request(model(dialect), CONVERSATION).json  # type: ignore[arg-type]
    assert not {"reasoning_effort", "think", "thinking"} & set(body)


def test_anthropic_thinking_leaves_out_the_sampling_it_refuses() -> None:
    conversation = Conversation(
        messages=CONVERSATION.messages,
        max_tokens=30000,
        temperature=0.2,
        top_p=0.5,
        reasoning="high",
    )
    body = get_dialect("anthropic").build_request(model("anthropic"), conversation).json  # type: ignore[arg-type]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 24576}
    assert "temperature" not in body
    assert "top_p" not in body


def test_anthropic_without_room_for_a_thinking_budget_turns_it_off() -> None:
    conversation = Conversation(messages=CONVERSATION.messages, max_tokens=800, reasoning="high")
    body = get_dialect("anthropic").build_request(model("anthropic"), conversation).json  # type: ignore[arg-type]
    assert body["thinking"] == {"type": "disabled"}
    assert body["max_tokens"] == 800
