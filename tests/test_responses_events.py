"""The Responses API's events of any stream of parts (proxy/formats/responses_api.py): items
that open and close in order, consecutive output indexes and sequence numbers, each item's
deltas whole in its done events and in the final response; and the request model's
translation to the proxy's Conversation."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from proxy.conversation import ForcedTool, Message, ToolCall
from proxy.errors import UpstreamError, error_body
from proxy.formats.responses_api import ResponseEventEncoder, ResponseObject
from proxy.parts import Part, Reasoning, ToolCallDelta
from proxy.responses_request import ResponsesRequest
from proxy.values import Done, Ending, Failed, Usage

_ADDED = "response.output_item.added"
_DONE = "response.output_item.done"


def encode(parts: list[Part], ending: Ending) -> list[dict[str, Any]]:
    encoder = ResponseEventEncoder(ResponseObject.new("resp_abc", "m", {}))
    data = encoder.opening()
    for part in parts:
        if isinstance(part, str):
            data += encoder.delta(part)
        elif isinstance(part, Reasoning):
            data += encoder.reasoning(part.text)
        else:
            data += encoder.tool_call(part)
    data += encoder.end(ending)
    events = []
    for block in data.decode().split("\n\n")[:-1]:
        kind, payload = block.split("\n")
        event = orjson.loads(payload.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        events.append(event)
    return events


@st.composite
def part_lists(draw: st.DrawFn) -> list[Part]:
    """Text, reasoning and the pieces of calls 0, 1, ... in order (a call's first piece with
    its id and name, the rest right after it, as every dialect's parser gives them), in any
    runs."""
    parts: list[Part] = []
    calls = 0
    for kind in draw(st.lists(st.sampled_from(["text", "reasoning", "call", "more"]), max_size=12)):
        text = draw(st.text(alphabet='aé€𝄞"\\\n{', min_size=1, max_size=5))
        if kind == "text":
            parts.append(text)
        elif kind == "reasoning":
            parts.append(Reasoning(text))
        elif kind == "call" or not isinstance(parts[-1:] and parts[-1], ToolCallDelta):
            name = draw(st.sampled_from(["f", "g"]))
            call_id = draw(st.sampled_from([None, f"call_{calls}"]))
            parts.append(ToolCallDelta(calls, call_id, name, text))
            calls += 1
        else:
            parts.append(ToolCallDelta(calls - 1, None, None, text))
    return parts


def _kind(part: Part) -> str:
    if isinstance(part, str):
        return "message"
    return "reasoning" if isinstance(part, Reasoning) else "function_call"


def expected_items(parts: list[Part]) -> list[tuple[str, str]]:
    """(kind, text) of each output item: a run of one kind, a call per call."""
    items: list[tuple[str, str]] = []
    for part in parts:
        kind = _kind(part)
        text = (
            part.arguments if isinstance(part, ToolCallDelta) else str(getattr(part, "text", part))
        )
        starts = (
            kind == "function_call" and isinstance(part, ToolCallDelta) and part.name is not None
        )
        if items and items[-1][0] == kind and not starts:
            items[-1] = (kind, items[-1][1] + text)
        else:
            items.append((kind, text))
    return items


def _item_text(item: dict[str, Any]) -> str:
    if item["type"] == "message":
        return "".join(part["text"] for part in item["content"])
    if item["type"] == "reasoning":
        return "".join(part["text"] for part in item["summary"])
    text: str = item["arguments"]
    return text


@given(part_lists(), st.sampled_from([None, "stop", "length", "tool_calls"]))
def test_items_open_and_close_in_order_with_consecutive_numbers(
    parts: list[Part], reason: str | None
) -> None:
    events = encode(parts, Done(reason, Usage(3, 4)))
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
    lifecycle = [e for e in events if e["type"] in (_ADDED, _DONE)]
    opened = len(lifecycle) // 2
    # added 0, done 0, added 1, done 1, ...: one item open at a time, in order.
    assert [(e["type"], e["output_index"]) for e in lifecycle] == [
        (kind, index) for index in range(opened) for kind in (_ADDED, _DONE)
    ]
    for event in events[2:-1]:
        index = event.get("output_index")
        owner = [e for e in lifecycle if e["output_index"] == index]
        assert (
            owner[0]["sequence_number"] <= event["sequence_number"] <= owner[1]["sequence_number"]
        )
        if "item_id" in event:
            assert event["item_id"] == owner[0]["item"]["id"]
    final = events[-1]
    incomplete = reason == "length"
    assert final["type"] == ("response.incomplete" if incomplete else "response.completed")
    output = final["response"]["output"]
    assert [(item["type"], _item_text(item)) for item in output] == expected_items(parts)
    assert [e["item"] for e in lifecycle if e["type"] == _DONE] == output
    assert len({item["id"] for item in output}) == len(output)
    assert final["response"]["usage"]["total_tokens"] == 7


@given(part_lists())
def test_each_items_deltas_are_its_done_text(parts: list[Part]) -> None:
    events = encode(parts, Done("stop"))
    deltas: dict[int, str] = {}
    for event in events:
        if event["type"].endswith(".delta"):
            deltas[event["output_index"]] = deltas.get(event["output_index"], "") + event["delta"]
    for item in events[-1]["response"]["output"]:
        index = events[-1]["response"]["output"].index(item)
        assert deltas.get(index, "") == _item_text(item)


@given(part_lists())
def test_a_failure_ends_with_the_error_event_then_response_failed(parts: list[Part]) -> None:
    failed = Failed(error_body(UpstreamError("upstream connection dropped mid-stream"), "r"))
    events = encode(parts, failed)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    error, last = events[-2:]
    assert error["type"] == "error"
    assert error["message"] == error["error"]["message"] == "upstream connection dropped mid-stream"
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"]["message"] == error["message"]
    output = last["response"]["output"]
    assert [(item["type"], _item_text(item)) for item in output] == expected_items(parts)


def test_a_calls_id_is_the_upstreams_or_a_unique_one() -> None:
    parts: list[Part] = [ToolCallDelta(0, "call_up", "f", "{}"), ToolCallDelta(1, None, "g", "")]
    output = encode(parts, Done("tool_calls"))[-1]["response"]["output"]
    assert output[0]["call_id"] == "call_up"
    assert output[1]["call_id"].startswith("call_")
    assert output[1]["call_id"] != "call_up"


def test_the_request_becomes_the_conversation() -> None:
    body = ResponsesRequest.model_validate(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use tools."},
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Let me check."}],
                },
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
            "max_output_tokens": 50,
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "w"},
            "reasoning": {"effort": "low", "summary": "auto"},
            "store": True,
        }
    )
    conversation = body.conversation()
    assert conversation.system == "Be brief."
    assert conversation.messages == (
        Message("system", "Use tools."),
        Message("user", "Weather?"),
        Message("assistant", "Let me check.", tool_calls=(ToolCall("c1", "w", "{}"),)),
        Message("tool", "sunny", tool_call_id="c1"),
    )
    assert conversation.max_tokens == 50
    assert conversation.reasoning == "low"
    assert conversation.tool_choice == ForcedTool("w")
    assert [tool.name for tool in conversation.tools] == ["w"]
