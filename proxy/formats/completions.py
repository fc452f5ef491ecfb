"""OpenAI's Chat Completions shapes of one stream (SPEC §5c): `chat.completion.chunk` events, or
one `chat.completion` object.

    data: {... "choices":[{"index":0,"delta":{"role":"assistant","content":""}, ...}]}
    data: {... "choices":[{"index":0,"delta":{"reasoning_content":"Hm"}, ...}]}  per reasoning delta
    data: {... "choices":[{"index":0,"delta":{"content":"Hel"}, ...}]}     one per text delta
    data: {... "delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function",
                        "function":{"name":"f","arguments":""}}]} ...}   a call's first piece
    data: {... "delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a"}}]} ...}
    data: {... "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}
    data: {... "choices":[],"usage":{...}}                                  when include_usage
    data: [DONE]

Reasoning travels as `delta.reasoning_content`, a string, only on the chunks that carry it: the
field Open WebUI, LibreChat and the AI SDK's OpenAI-compatible provider read (SPEC §5g). A
function call's pieces are `delta.tool_calls` by index, as OpenAI streams them (SPEC §5h), and
an answer that made a call finishes with `tool_calls` whatever the upstream's word (Ollama says
`stop` even then), unless it was cut at its length.
Every chunk of a completion carries its one `id`, `created` and `model`. A failure after the
first token is one `data: {"error": {...}}` event and no `[DONE]`: OpenAI's SDKs raise on an
event whose data has an `error` (openai-python's `Stream.__stream__`, openai-node's
`Stream.fromSSEResponse`), where a stream that merely stopped would look finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from proxy.errors import openai_error
from proxy.formats.encoders import Encoder, OutputFormat
from proxy.parts import Part, Reasoning, ReasoningSignature, ToolCallDelta
from proxy.values import Done, Ending, Failed, Usage

# OpenAI's words for why a completion stopped; the proxy's "other" (an upstream's own word) is
# a plain stop to OpenAI's clients. An upstream that said nothing (a llama.cpp server ends a
# stream cut at its token limit with a bare `[DONE]`) is reported as null, not as a stop:
# the proxy does not know the answer is whole, and does not make a reason up.
_FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls"})


@dataclass(slots=True, frozen=True)
class Completion:
    """What every chunk of one completion repeats."""

    id: str
    model: str
    created: int

    @classmethod
    def new(cls, completion_id: str, model: str) -> Completion:
        return cls(completion_id, model, int(time.time()))


def finish_reason(done: Done, called: bool = False) -> str | None:
    if called and done.finish_reason != "length":
        return "tool_calls"
    if done.finish_reason is None:
        return None
    return done.finish_reason if done.finish_reason in _FINISH_REASONS else "stop"


def tool_call_json(call: ToolCallDelta, first: bool) -> dict[str, Any]:
    """One piece of a call in `delta.tool_calls`: the first with its id, type and name."""
    if not first:
        return {"index": call.index, "function": {"arguments": call.arguments}}
    function = {"name": call.name or "", "arguments": call.arguments}
    return {"index": call.index, "id": call.id, "type": "function", "function": function}


def usage_json(usage: Usage | None) -> dict[str, int | None] | None:
    """OpenAI's usage object; a count the upstream did not report stays null (never a made-up
    0), and so does the total unless both are known."""
    if usage is None:
        return None
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    total = prompt + completion if prompt is not None and completion is not None else None
    counts: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
    }
    if usage.reasoning_tokens is not None:
        counts["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return counts


def error_event_json(failed: Failed) -> dict[str, Any]:
    """The error of a failed stream in OpenAI's error object (a 502 had it come in time)."""
    error = failed.error["error"]
    return openai_error(502, error["type"], error["message"])


@dataclass(slots=True)
class WholeAnswer:
    """A `stream: false` answer gathered from its parts (a Gathering, proxy/opening.py)."""

    completion: Completion
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    # By index: {"id", "type", "function": {name, arguments}}.
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, part: Part) -> None:
        if isinstance(part, str):
            self.text.append(part)
        elif isinstance(part, Reasoning):
            self.reasoning.append(part.text)
        elif isinstance(part, ToolCallDelta):
            self.add_call(part)

    def whole(self, done: Done) -> dict[str, Any]:
        return completion_json(self.completion, self, done)

    def add_call(self, call: ToolCallDelta) -> None:
        whole = self.calls.get(call.index)
        if whole is None:
            function = {"name": call.name or "", "arguments": call.arguments}
            self.calls[call.index] = {"id": call.id, "type": "function", "function": function}
        else:
            whole["function"]["arguments"] += call.arguments


def completion_json(completion: Completion, answer: WholeAnswer, done: Done) -> dict[str, Any]:
    """The whole answer as one `chat.completion` (`stream: false`)."""
    text = "".join(answer.text)
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if answer.reasoning:
        message["reasoning_content"] = "".join(answer.reasoning)
    if answer.calls:
        message["tool_calls"] = [answer.calls[index] for index in sorted(answer.calls)]
        message["content"] = text or None  # OpenAI's: null for an answer that is only calls
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(done, bool(answer.calls)),
            }
        ],
        "usage": usage_json(done.usage),
    }


class ChatCompletionChunkEncoder:
    """`chat.completion.chunk` SSE events; the shared head of every chunk is rendered once."""

    __slots__ = ("_calls", "_head", "_include_usage", "_tail")
    keepalive = b": ping\n\n"

    def __init__(self, completion: Completion, include_usage: bool) -> None:
        shared = {
            "id": completion.id,
            "object": "chat.completion.chunk",
            "created": completion.created,
            "model": completion.model,
        }
        # `{"id":...,"model":"m"}` → `data: {"id":...,"model":"m","choices":[...]...}`
        self._head = b"data: " + orjson.dumps(shared)[:-1] + b',"choices":'
        # With include_usage every chunk says `"usage":null` but the last (OpenAI's rule).
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._include_usage = include_usage
        self._calls: set[int] = set()  # the calls begun

    def _chunk(self, delta: bytes, finish: str | None = None) -> bytes:
        reason = b"null" if finish is None else orjson.dumps(finish)
        choice = b'[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]' % (delta, reason)
        return self._head + choice + self._tail

    def opening(self) -> bytes:
        return self._chunk(b'{"role":"assistant","content":""}')

    def delta(self, text: str) -> bytes:
        return self._chunk(b'{"content":%s}' % orjson.dumps(text))

    def reasoning(self, text: str) -> bytes:
        return self._chunk(b'{"reasoning_content":%s}' % orjson.dumps(text))

    def tool_call(self, call: ToolCallDelta) -> bytes:
        first = call.index not in self._calls
        self._calls.add(call.index)
        return self._chunk(b'{"tool_calls":[%s]}' % orjson.dumps(tool_call_json(call, first)))

    def signature(self, part: ReasoningSignature) -> bytes:
        return b""  # Chat Completions has no field for it

    def end(self, ending: Ending) -> bytes:
        if isinstance(ending, Failed):
            return b"data: %s\n\n" % orjson.dumps(error_event_json(ending))
        last = self._chunk(b"{}", finish_reason(ending, bool(self._calls)))
        if self._include_usage:
            usage = orjson.dumps(usage_json(ending.usage))
            last += self._head + b'[],"usage":' + usage + b"}\n\n"
        return last + b"data: [DONE]\n\n"


def _default_chunks(offset: int, message_id: str) -> Encoder:
    return ChatCompletionChunkEncoder(Completion.new(message_id, ""), include_usage=False)


CHAT_COMPLETION_CHUNKS = OutputFormat(
    "chat-completion-chunks",
    "text/event-stream",
    "text/event-stream; charset=utf-8",
    _default_chunks,
)


def chat_completion_chunks(completion: Completion, include_usage: bool) -> OutputFormat:
    """The chunks of this completion: what its request asked for (model, include_usage)."""

    def encoder(offset: int, message_id: str) -> Encoder:
        return ChatCompletionChunkEncoder(completion, include_usage)

    return replace(CHAT_COMPLETION_CHUNKS, new_encoder=encoder)
