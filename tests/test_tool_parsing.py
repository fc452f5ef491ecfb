"""Each tool-capable dialect's parser (issue 27, SPEC §5h): any split of a stream with text,
then one call or two parallel calls, gives identical ids, names and argument strings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.dialects import get_dialect
from proxy.parts import Part, ToolCallDelta
from tests.splits import cuts, split_at, token_text
from tests.test_dialects import sse

# (name, arguments as the JSON text the client must end up with)
Call = tuple[str, str]
arguments = st.dictionaries(
    st.sampled_from(["city", "ünits", "q", "n"]),
    st.one_of(token_text, st.integers(-(10**9), 10**9), st.booleans()),
    max_size=3,
).map(lambda value: orjson.dumps(value).decode())
calls = st.lists(
    st.tuples(st.sampled_from(["get_weather", "search", "lookup_ünicode"]), arguments),
    min_size=1,
    max_size=2,
)


def fragments(text: str, size: int = 5) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def openai_calls(text: list[str], wanted: list[Call]) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    body = b"".join(chunk({"content": t}) for t in text)
    for index, (name, args) in enumerate(wanted):
        first = {"index": index, "id": f"call_{index}", "type": "function"}
        body += chunk({"tool_calls": [{**first, "function": {"name": name, "arguments": ""}}]})
        for piece in fragments(args):
            body += chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return body + chunk({}, "tool_calls") + b"data: [DONE]\n\n"


def anthropic_calls(text: list[str], wanted: list[Call]) -> bytes:
    def event(payload: dict[str, Any]) -> bytes:
        return sse(payload, str(payload["type"]))

    body = event({"type": "message_start", "message": {"id": "m"}})
    body += event({"type": "content_block_start", "index": 0, "content_block": {"type": "text"}})
    for t in text:
        delta = {"type": "text_delta", "text": t}
        body += event({"type": "content_block_delta", "index": 0, "delta": delta})
    body += event({"type": "content_block_stop", "index": 0})
    for number, (name, args) in enumerate(wanted, start=1):
        block = {"type": "tool_use", "id": f"toolu_{number - 1}", "name": name, "input": {}}
        body += event({"type": "content_block_start", "index": number, "content_block": block})
        for piece in fragments(args) if args != "{}" else []:
            delta = {"type": "input_json_delta", "partial_json": piece}
            body += event({"type": "content_block_delta", "index": number, "delta": delta})
        body += event({"type": "content_block_stop", "index": number})
    body += event({"type": "message_delta", "delta": {"stop_reason": "tool_use"}})
    return body + event({"type": "message_stop"})


def ollama_calls(text: list[str], wanted: list[Call]) -> bytes:
    lines: list[dict[str, Any]] = [
        {"message": {"role": "assistant", "content": t}, "done": False} for t in text
    ]
    functions = [
        {"function": {"name": name, "arguments": orjson.loads(args)}} for name, args in wanted
    ]
    lines.append({"message": {"role": "assistant", "content": "", "tool_calls": functions}})
    lines.append({"message": {"role": "assistant", "content": ""}, "done": True})
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


STREAMS: dict[str, Callable[[list[str], list[Call]], bytes]] = {
    "openai": openai_calls,
    "anthropic": anthropic_calls,
    "ollama": ollama_calls,
}


def read(dialect: str, pieces: list[bytes]) -> tuple[str, list[tuple[str | None, str, str]]]:
    """The text, and each call as (id, name, arguments joined), by index."""
    parser = get_dialect(dialect).parser(1_048_576)
    parts: list[Part] = []
    for piece in [*pieces, None]:
        got, failure = parser.feed(piece) if piece is not None else parser.close()
        assert failure is None, failure
        parts += got
    assert parser.complete
    text = "".join(part for part in parts if isinstance(part, str))
    pieces_of: dict[int, list[ToolCallDelta]] = {}
    for part in parts:
        if isinstance(part, ToolCallDelta):
            pieces_of.setdefault(part.index, []).append(part)
    found = []
    for index in sorted(pieces_of):
        first, *rest = pieces_of[index]
        assert first.name is not None
        assert all(p.id is None and p.name is None for p in rest)  # id and name sent once
        found.append((first.id, first.name, "".join(p.arguments for p in pieces_of[index])))
    return text, found


def same_json(found: str, expected: str) -> bool:
    return orjson.loads(found) == orjson.loads(expected)


@pytest.mark.parametrize("dialect", STREAMS)
@given(text=st.lists(token_text, max_size=4), wanted=calls, cut_points=cuts)
def test_any_split_gives_the_same_calls(
    dialect: str, text: list[str], wanted: list[Call], cut_points: list[int]
) -> None:
    body = STREAMS[dialect](text, wanted)
    got_text, found = read(dialect, split_at(body, cut_points))
    assert got_text == "".join(text)
    assert [name for _, name, _ in found] == [name for name, _ in wanted]
    if dialect == "ollama":  # arguments come as objects: the same JSON, serialised compactly
        assert all(same_json(f[2], w[1]) for f, w in zip(found, wanted, strict=True))
        assert len({call_id for call_id, _, _ in found}) == len(wanted)  # made up, unique
    else:
        assert [args for _, _, args in found] == [args for _, args in wanted]
        prefix = "call_" if dialect == "openai" else "toolu_"
        assert [call_id for call_id, _, _ in found] == [f"{prefix}{i}" for i in range(len(wanted))]


def test_a_server_that_repeats_the_id_and_name_sends_them_once() -> None:
    """vLLM and others have sent a call's id and name on every piece: a client that joins
    strings would read the name twice."""
    call = {"index": 0, "id": "call_7", "type": "function"}
    body = b"".join(
        sse({"choices": [{"index": 0, "delta": {"tool_calls": [{**call, "function": f}]}}]})
        for f in ({"name": "f", "arguments": '{"a"'}, {"name": "f", "arguments": ": 1}"})
    )
    body += sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    assert read("openai", [body + b"data: [DONE]\n\n"]) == ("", [("call_7", "f", '{"a": 1}')])


def test_a_call_without_an_index_or_id_gets_its_position_and_a_made_up_id() -> None:
    call = {"function": {"name": "f", "arguments": "{}"}}
    body = sse({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    body += sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    _, [(call_id, name, args)] = read("openai", [body + b"data: [DONE]\n\n"])
    assert call_id is not None
    assert call_id.startswith("call_")
    assert (name, args) == ("f", "{}")


def test_an_anthropic_call_with_no_input_streams_an_empty_object() -> None:
    body = anthropic_calls([], [("now", "{}")])
    assert read("anthropic", [body]) == ("", [("toolu_0", "now", "{}")])
