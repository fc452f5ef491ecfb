"""What a stream carries, defined once: its parts, in order, then one Ending.

    str             a text delta: the answer, exactly as decoded
    Reasoning       a reasoning delta: a thinking model's thoughts, exactly as decoded
    ToolCallDelta   a piece of a function call: its first carries the call's index, id and
                    name, the rest argument fragments under the same index
    ReasoningSignature  the signature that seals the reasoning before it (Anthropic's
                    `signature_delta`): opaque, no characters, for a client to send back
    Ending          Done | Failed (proxy/values.py): last, once

A text delta is the bare `str`: most deltas are text, and a str needs no wrapper per delta
(`type(part) is str` is the fast path every consumer takes first). Every other kind is a small
frozen class here, and each consumer dispatches over the family: a dialect's parser makes
parts, the core (attempt, relay, session) only notes that one arrived, the stores keep them
and an encoder is the one place that knows how its API spells each. A new kind is one more class
here and one method per encoder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from proxy.values import Ending


@dataclass(slots=True, frozen=True)
class Reasoning:
    """A reasoning delta (OpenAI-compatible `reasoning_content` or `reasoning`, Anthropic's
    `thinking_delta`, Ollama's `message.thinking`)."""

    text: str


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    """A piece of the `index`-th function call of an answer (0, 1, ...: calls alone are
    counted). The first piece of a call carries its `id` and `name`; every piece may carry a
    fragment of its `arguments`, JSON text, in order. An upstream that sends a call whole
    gives one piece."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(slots=True, frozen=True)
class ReasoningSignature:
    """The signature of the reasoning just before it (Anthropic's `signature_delta`, issue 29):
    opaque, never shown, counted as no characters. A client of Anthropic's Messages API sends
    its thinking back with it; only the Messages API carries it (every other encoder writes
    nothing for it), and resumable stores do not keep it."""

    signature: str


Part = str | Reasoning | ToolCallDelta | ReasoningSignature
Item = Part | Ending


def characters(part: Part) -> str:
    """The characters a part adds to its stream: what offsets and byte counts count (a call's
    argument fragments)."""
    if isinstance(part, str):
        return part
    if isinstance(part, ReasoningSignature):
        return ""
    return part.arguments if isinstance(part, ToolCallDelta) else part.text


def add_text(parts: list[Part], text: object) -> None:
    """Append a text delta, joined to a text delta just before it: what one read completed
    is written at once. Anything but a non-empty string is no part."""
    if not isinstance(text, str) or not text:
        return
    if parts and type(parts[-1]) is str:
        parts[-1] += text
    else:
        parts.append(text)


def add_reasoning(parts: list[Part], text: object) -> None:
    """Append a reasoning delta, joined to one just before it. Anything but a non-empty
    string (null, "", an object some servers send) is no part."""
    if not isinstance(text, str) or not text:
        return
    last = parts[-1] if parts else None
    if isinstance(last, Reasoning):
        parts[-1] = Reasoning(last.text + text)
    else:
        parts.append(Reasoning(text))


def add_tool_call(parts: list[Part], call: ToolCallDelta) -> None:
    """Append a piece of a call, its arguments joined to the piece just before it when that
    is of the same call and this one starts nothing (no id, no name)."""
    last = parts[-1] if parts else None
    if (
        isinstance(last, ToolCallDelta)
        and last.index == call.index
        and call.id is None
        and call.name is None
    ):
        parts[-1] = ToolCallDelta(last.index, last.id, last.name, last.arguments + call.arguments)
    elif call.id is not None or call.name is not None or call.arguments:
        parts.append(call)


class ItemSource(Protocol):
    """A live session or a stored stream: its parts, then its Ending."""

    def __aiter__(self) -> AsyncIterator[Item]: ...

    async def __anext__(self) -> Item: ...

    async def aclose(self) -> None: ...
