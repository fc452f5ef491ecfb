"""The Messages API encoder (proxy/formats/messages.py), for any sequence of parts: its events
open and close blocks in order with consecutive indexes, each delta goes to the open block of
its kind, nothing is lost or reordered within a kind, and Anthropic's own SDK accumulates the
stream into the same message as the not-streamed answer (issue 29)."""

from __future__ import annotations

from typing import Any

import orjson
from anthropic._models import construct_type
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from hypothesis import given
from hypothesis import strategies as st

from proxy.formats.messages import MessageMeta, MessagesEncoder, WholeMessage, message_json
from proxy.parts import Part, Reasoning, ReasoningSignature, ToolCallDelta
from proxy.responses import encode_part
from proxy.values import Done, Ending, Failed, Usage

DELTA_BLOCKS = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "signature_delta": "thinking",
    "input_json_delta": "tool_use",
}
words = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
json_objects = st.dictionaries(
    st.text(max_size=4), st.integers(-1000, 1000) | st.text(max_size=6), max_size=3
)


@st.composite
def answers(draw: st.DrawFn) -> list[Part]:
    """Text, reasoning and signatures, and calls whose pieces interleave with them and with
    each other in any order, each call's own pieces in order."""
    others: list[Part] = draw(
        st.lists(
            words | words.map(Reasoning) | st.just(ReasoningSignature("c2ln")),
            max_size=8,
        )
    )
    streams: list[list[Part]] = [others]
    for index in range(draw(st.integers(0, 3))):
        arguments = orjson.dumps(draw(json_objects)).decode()
        cuts = sorted(draw(st.lists(st.integers(0, len(arguments)), max_size=3)))
        pieces = [arguments[a:b] for a, b in zip([0, *cuts], [*cuts, len(arguments)], strict=True)]
        first = ToolCallDelta(index, f"call_{index}", f"tool_{index}", pieces[0])
        streams.append([first, *(ToolCallDelta(index, None, None, p) for p in pieces[1:])])
    merged: list[Part] = []
    while any(streams):
        source = draw(st.sampled_from([s for s in streams if s]))
        merged.append(source.pop(0))
    return merged


endings = st.builds(
    Done,
    st.sampled_from([None, "stop", "length", "tool_calls", "content_filter", "other"]),
    st.none() | st.builds(Usage, st.integers(0, 99), st.integers(0, 99)),
)


def encode(parts: list[Part], ending: Ending) -> list[dict[str, Any]]:
    encoder = MessagesEncoder(MessageMeta("msg_1", "m"))
    body = encoder.opening() + b"".join(encode_part(encoder, part) for part in parts)
    body += encoder.end(ending)
    events = []
    for block in body.decode().strip().split("\n\n"):
        name, data = block.split("\n")
        event = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    return events


def check_blocks(events: list[dict[str, Any]]) -> None:
    """Blocks open one at a time, in order, from 0; deltas only to the open block, of its kind."""
    started, open_block = 0, None
    for event in events[1:]:
        kind = event["type"]
        if kind == "content_block_start":
            assert open_block is None
            assert event["index"] == started
            open_block = (started, event["content_block"]["type"])
            started += 1
        elif kind == "content_block_delta":
            assert open_block == (event["index"], DELTA_BLOCKS[event["delta"]["type"]])
        elif kind == "content_block_stop":
            assert open_block is not None
            assert event["index"] == open_block[0]
            open_block = None
        else:
            assert open_block is None


@given(answers(), endings)
def test_any_parts_give_blocks_in_order_with_consecutive_indexes(
    parts: list[Part], done: Done
) -> None:
    events = encode(parts, done)
    assert events[0]["type"] == "message_start"
    assert [event["type"] for event in events[-2:]] == ["message_delta", "message_stop"]
    check_blocks(events)
    deltas = [event["delta"] for event in events if event["type"] == "content_block_delta"]
    text = "".join(delta["text"] for delta in deltas if delta["type"] == "text_delta")
    thinking = "".join(d["thinking"] for d in deltas if d["type"] == "thinking_delta")
    assert text == "".join(part for part in parts if isinstance(part, str))
    assert thinking == "".join(part.text for part in parts if isinstance(part, Reasoning))
    called = any(isinstance(part, ToolCallDelta) for part in parts)
    reason = events[-2]["delta"]["stop_reason"]
    assert (reason == "tool_use") == (called and done.finish_reason != "length")


@given(answers(), endings)
def test_the_sdk_accumulates_the_same_message_as_the_whole_answer(
    parts: list[Part], done: Done
) -> None:
    snapshot, json_bufs = None, {}  # as the SDK's MessageStream keeps them
    for event in encode(parts, done):
        typed = construct_type(type_=RawMessageStreamEvent, value=event)
        snapshot = accumulate_event(
            event=typed,  # type: ignore[arg-type]
            current_snapshot=snapshot,
            json_bufs=json_bufs,
        )
    assert snapshot is not None
    whole = WholeMessage(MessageMeta("msg_1", "m"))
    for part in parts:
        whole.add(part)
    expected = message_json(MessageMeta("msg_1", "m"), whole, done)
    streamed = snapshot.to_dict()
    assert _by_kind(streamed["content"]) == _by_kind(expected["content"])
    assert streamed["stop_reason"] == expected["stop_reason"]
    assert streamed["usage"]["output_tokens"] == expected["usage"]["output_tokens"]


def _by_kind(content: list[dict[str, Any]]) -> dict[str, Any]:
    """The content as what each kind adds up to: the blocks' order may differ where an
    upstream interleaved calls with other parts (held until the end while streaming)."""
    calls = sorted(
        (block["id"], block["name"], block["input"])
        for block in content
        if block["type"] == "tool_use"
    )
    return {
        "text": "".join(block["text"] for block in content if block["type"] == "text"),
        "thinking": [
            (block["thinking"], block["signature"])
            for block in content
            if block["type"] == "thinking"
        ],
        "calls": calls,
    }


def _delta_kind(event: dict[str, Any]) -> str | None:
    delta = event.get("delta") or {}
    return delta.get("type") or delta.get("stop_reason")


def test_a_failure_is_one_error_event_in_anthropics_shape() -> None:
    failed = Failed({"error": {"type": "upstream_timeout", "message": "idle", "request_id": "r"}})
    *_, error = encode(["Hel", "lo"], failed)
    assert error == {"type": "error", "error": {"type": "api_error", "message": "idle"}}


def test_a_thinking_text_tool_use_answer_in_anthropics_order() -> None:
    parts: list[Part] = [
        Reasoning("Hm"),
        ReasoningSignature("c2ln"),
        "Let me check.",
        ToolCallDelta(0, "toolu_1", "get_weather", '{"city"'),
        ToolCallDelta(0, None, None, ':"Paris"}'),
    ]
    events = encode(parts, Done("tool_calls", Usage(10, 5)))
    shapes = [(e["type"], e.get("index"), _delta_kind(e)) for e in events]
    assert shapes == [
        ("message_start", None, None),
        ("content_block_start", 0, None),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, None),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, None),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("message_delta", None, "tool_use"),
        ("message_stop", None, None),
    ]
    assert events[-2]["usage"] == {"input_tokens": 10, "output_tokens": 5}
