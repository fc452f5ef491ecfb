"""The fake's tool calls: which tools it calls, with what arguments, split how, and what it
says once it has the results.

A call's arguments are deterministic, derived from the prompt and the call's index, and carry
characters of two, three and four UTF-8 bytes and JSON escapes inside their strings, so a test
that splits a stream anywhere cuts through them. They stream as a JSON string
(`tool_call_arguments`) a fragment of `@arg_split` characters at a time; Ollama, which sends a
call whole, sends them as the object itself (`tool_call_input`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from proxy.fake_upstream.directives import Directives

CITIES: Final = ("Zürich", "São Paulo", "Kraków", "東京", "Reykjavík")
NOTE: Final = 'naïve → ok 🙂 "quoted" \\ end'

# What a model that says something before calling says (`@text_before_call=1`).
TEXT_BEFORE_CALL: Final = "Let me check."

# Call ids as each API spells them; Ollama gives its calls none.
_ID_PREFIXES: Final = {"openai": "call_fake_", "anthropic": "toolu_fake_"}


def tool_call_input(prompt: str, index: int) -> dict[str, Any]:
    """The arguments of the fake's call number index (from 0) for prompt, as an object."""
    city = CITIES[(zlib.crc32(prompt.encode()) + index) % len(CITIES)]
    return {"city": city, "call": index, "note": NOTE}


def tool_call_arguments(prompt: str, index: int) -> str:
    """The arguments of call number index exactly as streamed: compact JSON, UTF-8 unescaped."""
    return orjson.dumps(tool_call_input(prompt, index)).decode()


def tool_call_fragments(prompt: str, index: int) -> list[str]:
    """The arguments of call number index as they stream, `@arg_split` characters a fragment."""
    split = Directives.parse(prompt, tokens=None, delay=0).arg_split
    return _fragments(tool_call_arguments(prompt, index), split)


def tool_call_id(dialect: str, index: int) -> str | None:
    """The id of call number index in dialect (`openai`, `anthropic`); None for `ollama`."""
    prefix = _ID_PREFIXES.get(dialect)
    return None if prefix is None else f"{prefix}{index}"


def tool_answer_text(results: Sequence[str]) -> str:
    """The fake's answer to a turn of tool results: their contents, in order."""
    return "Tool results: " + " | ".join(results)


def _fragments(arguments: str, split: int) -> list[str]:
    return [arguments[start : start + split] for start in range(0, len(arguments), split)]


@dataclass(slots=True, frozen=True)
class ToolCall:
    """One call the fake makes: to which tool, with what, in which fragments."""

    index: int
    name: str
    input: dict[str, Any]
    arguments: str
    fragments: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class Fragment:
    """One fragment of a call's arguments, the unit a reply that calls streams (and paces,
    and counts for usage and for `@after`)."""

    call: ToolCall
    position: int

    @property
    def text(self) -> str:
        return self.call.fragments[self.position]

    @property
    def first(self) -> bool:
        return self.position == 0

    @property
    def last(self) -> bool:
        return self.position == len(self.call.fragments) - 1


def plan_calls(prompt: str, tools: Sequence[str], directives: Directives) -> tuple[ToolCall, ...]:
    """The calls a reply makes: `@call` of them, to the request's tools (none without tools)."""
    if not tools:
        return ()
    calls = []
    for index in range(directives.call):
        arguments = tool_call_arguments(prompt, index)
        name = tools[index] if index < len(tools) else tools[0]
        fragments = tuple(_fragments(arguments, directives.arg_split))
        calls.append(ToolCall(index, name, tool_call_input(prompt, index), arguments, fragments))
    return tuple(calls)


def fragments_of(calls: Sequence[ToolCall]) -> list[Fragment]:
    """Every fragment of calls, call after call: parallel calls stream one after the other."""
    return [Fragment(call, position) for call in calls for position in range(len(call.fragments))]
