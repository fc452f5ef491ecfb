"""OpenAI's Responses API shapes of one stream (SPEC §5i): its server-sent events, or one
`response` object.

    response.created, response.in_progress                          the response, in progress
    per output item, in order (output_index 0, 1, ...):
      response.output_item.added
        message:   response.content_part.added, response.output_text.delta...,
                   response.output_text.done, response.content_part.done
        reasoning: response.reasoning_summary_part.added,
                   response.reasoning_summary_text.delta..., response.reasoning_summary_text.done,
                   response.reasoning_summary_part.done
        function_call: response.function_call_arguments.delta..., ...arguments.done
      response.output_item.done
    response.completed | response.incomplete (stopped at max_output_tokens or by a content
    filter), with the whole response and its usage
    or, after a failure: error, response.failed

Every event says `event: <type>` and carries its `sequence_number`, counted from 0 without a
gap, as OpenAI's do: `client.responses.stream()` (openai-python) and `@ai-sdk/openai` read
them. A run of parts of one kind is one item: text is a `message`, reasoning a `reasoning` item
whose thoughts stream as its summary (the part of a reasoning item that OpenAI's clients and
the AI SDK render; an upstream's raw thoughts are the only summary the proxy has), and each
call a `function_call` item, `call_id` the upstream's id (one the proxy makes where it gave
none). An item closes when a part of another item comes, or at the end. Pieces of an earlier
call that come after a later call began (no upstream the proxy reads sends them so) are kept
in the response's output, without an event: an item once done is not reopened.

A failure after the commit point is OpenAI's `error` event, its fields nested under `error` as
OpenAI sends them (openai-python raises APIError on it) and flat as OpenAI documents them, then
`response.failed` with the output so far: the stream ends without `response.completed`.
Counts an upstream did not report are 0 in `usage`: the API's usage has no null, and the AI
SDK refuses a `response.completed` without it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson

from proxy.errors import openai_error
from proxy.formats.encoders import Encoder, OutputFormat
from proxy.parts import Part, Reasoning, ReasoningSignature, ToolCallDelta
from proxy.values import Done, Ending, Failed, Usage

# Why an answer stopped short, in the Responses API's words (`incomplete_details.reason`).
_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}
# Each kind of item's delta event, and what follows its delta: (type, tail).
_DELTAS: Final = {
    "message": ("response.output_text.delta", b',"logprobs":[]}\n\n'),
    "reasoning": ("response.reasoning_summary_text.delta", b"}\n\n"),
    "function_call": ("response.function_call_arguments.delta", b"}\n\n"),
}
_ID_PREFIXES: Final = {"message": "msg_", "reasoning": "rs_", "function_call": "fc_"}


@dataclass(slots=True, frozen=True)
class ResponseObject:
    """What every event's response repeats: its id, model, time and the request's settings
    (`echo`: instructions, tools, ... as OpenAI repeats them)."""

    id: str
    model: str
    created_at: int
    echo: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, response_id: str, model: str, echo: Mapping[str, Any]) -> ResponseObject:
        return cls(response_id, model, int(time.time()), echo)

    def json(self, status: str, output: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "model": self.model,
            "output": output,
            "previous_response_id": None,
            "store": False,  # the proxy keeps nothing (SPEC §5i)
            "usage": None,
            **self.echo,
            **more,
        }


def usage_json(usage: Usage | None) -> dict[str, Any]:
    known = usage or Usage()
    prompt, completion = known.prompt_tokens or 0, known.completion_tokens or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": known.reasoning_tokens or 0},
        "total_tokens": prompt + completion,
    }


def item_json(
    kind: str, item_id: str, status: str, text: str | None, call: Any = None
) -> dict[str, Any]:
    """An output item as it stands: `text` None while it has none (just added)."""
    if kind == "message":
        content = [] if text is None else [text_part(text)]
        return {
            "id": item_id,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        }
    if kind == "reasoning":
        summary = [] if text is None else [{"type": "summary_text", "text": text}]
        return {"id": item_id, "type": "reasoning", "summary": summary}
    call_id, name = call
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": text or "",
        "call_id": call_id,
        "name": name,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


# Where a kind's deltas go within its item.
_POSITIONS: Final = {"message": {"content_index": 0}, "reasoning": {"summary_index": 0}}


def opening_events(kind: str, where: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """What follows an item's `output_item.added`: its one content or summary part."""
    if kind == "message":
        return [
            ("response.content_part.added", {**where, "content_index": 0, "part": text_part("")})
        ]
    if kind == "reasoning":
        part = {"type": "summary_text", "text": ""}
        return [
            ("response.reasoning_summary_part.added", {**where, "summary_index": 0, "part": part})
        ]
    return []


def closing_events(
    kind: str, where: dict[str, Any], item: dict[str, Any], text: str
) -> list[tuple[str, dict[str, Any]]]:
    """What precedes an item's `output_item.done`: its text whole, its part done."""
    if kind == "message":
        return [
            (
                "response.output_text.done",
                {**where, "content_index": 0, "text": text, "logprobs": []},
            ),
            ("response.content_part.done", {**where, "content_index": 0, "part": text_part(text)}),
        ]
    if kind == "reasoning":
        part = {"type": "summary_text", "text": text}
        return [
            ("response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": text}),
            ("response.reasoning_summary_part.done", {**where, "summary_index": 0, "part": part}),
        ]
    done = {**where, "arguments": item["arguments"], "name": item["name"]}
    return [("response.function_call_arguments.done", done)]


class ResponseEventEncoder:
    """The Responses API's events; one output item open at a time."""

    __slots__ = (
        "_calls",
        "_delta_head",
        "_delta_tail",
        "_index",
        "_kind",
        "_output",
        "_response",
        "_sequence",
        "_texts",
    )
    keepalive = b": ping\n\n"

    def __init__(self, response: ResponseObject) -> None:
        self._response = response
        self._sequence = 0
        self._output: list[dict[str, Any]] = []  # every item as it stands
        self._kind = ""  # the open item's kind ("": none open)
        self._index = -1  # the open item's output_index
        self._texts: list[str] = []  # the open item's text (or arguments) so far
        self._calls: dict[int, int] = {}  # a call's index → its item's output_index
        self._delta_head = b""
        self._delta_tail = b""

    def opening(self) -> bytes:
        shell = self._response.json("in_progress", [])
        return self._event("response.created", response=shell) + self._event(
            "response.in_progress", response=shell
        )

    def delta(self, text: str) -> bytes:
        opening = b"" if self._kind == "message" else self._switch("message")
        return opening + self._delta(text)

    def reasoning(self, text: str) -> bytes:
        opening = b"" if self._kind == "reasoning" else self._switch("reasoning")
        return opening + self._delta(text)

    def signature(self, part: ReasoningSignature) -> bytes:
        return b""  # a reasoning summary has no signature: Anthropic's, for its own API alone

    def tool_call(self, call: ToolCallDelta) -> bytes:
        index = self._calls.get(call.index)
        if index is None:
            call_id = (
                call.id or f"call_{self._response.id.removeprefix('resp_')}{len(self._output)}"
            )
            opening = self._switch("function_call", (call_id, call.name or ""))
            self._calls[call.index] = self._index
        elif index == self._index and self._kind == "function_call":
            opening = b""
        else:  # a piece of a call already done: its item in the response takes it
            self._output[index]["arguments"] += call.arguments
            return b""
        return opening + (self._delta(call.arguments) if call.arguments else b"")

    def end(self, ending: Ending) -> bytes:
        if isinstance(ending, Failed):
            return self._failed(ending)
        reason = _INCOMPLETE.get(ending.finish_reason or "")
        closing = self._close("incomplete" if reason else "completed")
        kind = "response.incomplete" if reason else "response.completed"
        return closing + self._event(kind, response=self.whole(ending))

    def add(self, part: Part) -> None:
        """A part of a `stream: false` answer: gathered as if sent (a Gathering)."""
        if isinstance(part, str):
            self.delta(part)
        elif isinstance(part, Reasoning):
            self.reasoning(part.text)
        elif isinstance(part, ToolCallDelta):
            self.tool_call(part)

    def whole(self, done: Done) -> dict[str, Any]:
        """The response once it has ended: every item closed."""
        reason = _INCOMPLETE.get(done.finish_reason or "")
        if self._kind:
            self._close("incomplete" if reason else "completed")
        details = {"reason": reason} if reason else None
        status = "incomplete" if reason else "completed"
        usage = usage_json(done.usage)
        return self._response.json(status, self._output, incomplete_details=details, usage=usage)

    def _failed(self, failed: Failed) -> bytes:
        error = openai_error(502, failed.error["error"]["type"], failed.message)["error"]
        if self._kind:
            self._output[self._index] = self._item("incomplete")
        flat = {"code": error["code"], "message": error["message"], "param": None}
        failure = self._event("error", **flat, error=error)
        summary = {"code": "server_error", "message": error["message"]}
        response = self._response.json("failed", self._output, error=summary)
        return failure + self._event("response.failed", response=response)

    def _delta(self, text: str) -> bytes:
        self._texts.append(text)
        number = self._sequence
        self._sequence += 1
        return self._delta_head % number + orjson.dumps(text) + self._delta_tail

    def _switch(self, kind: str, call: tuple[str, str] | None = None) -> bytes:
        """Close the open item, open one of `kind`: its added events."""
        closing = self._close("completed") if self._kind else b""
        self._kind, self._index, self._texts = kind, len(self._output), []
        item_id = f"{_ID_PREFIXES[kind]}{self._response.id.removeprefix('resp_')}{self._index}"
        self._output.append(item_json(kind, item_id, "in_progress", None, call))
        where = {"item_id": item_id, "output_index": self._index}
        opening = self._event(
            "response.output_item.added", output_index=self._index, item=self._output[-1]
        )
        for event, fields in opening_events(kind, where):
            opening += self._event(event, **fields)
        event, self._delta_tail = _DELTAS[kind]
        head = {"type": event, "sequence_number": 0, **where, **_POSITIONS.get(kind, {})}
        # `..."sequence_number":0,...` → `..."sequence_number":%d,...,"delta":`
        rendered = orjson.dumps(head)[:-1].replace(b'"sequence_number":0', b'"sequence_number":%d')
        self._delta_head = b"event: " + event.encode() + b"\ndata: " + rendered + b',"delta":'
        return closing + opening

    def _close(self, status: str) -> bytes:
        """The open item's done events; nothing when none is open."""
        if not self._kind:
            return b""
        item = self._output[self._index] = self._item(status)
        where = {"item_id": item["id"], "output_index": self._index}
        closing = b""
        for event, fields in closing_events(self._kind, where, item, "".join(self._texts)):
            closing += self._event(event, **fields)
        self._kind = ""
        return closing + self._event(
            "response.output_item.done", output_index=self._index, item=item
        )

    def _item(self, status: str) -> dict[str, Any]:
        """The open item with its text so far."""
        added = self._output[self._index]
        call = (added["call_id"], added["name"]) if self._kind == "function_call" else None
        return item_json(self._kind, added["id"], status, "".join(self._texts), call)

    def _event(self, kind: str, **fields: Any) -> bytes:
        number = self._sequence
        self._sequence += 1
        data = orjson.dumps({"type": kind, "sequence_number": number, **fields})
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), data)


def _default_events(offset: int, message_id: str) -> Encoder:
    return ResponseEventEncoder(ResponseObject.new(message_id, "", {}))


RESPONSE_EVENTS = OutputFormat(
    "response-events",
    "text/event-stream",
    "text/event-stream; charset=utf-8",
    _default_events,
)


def response_events(response: ResponseObject) -> OutputFormat:
    """The events of this response: what its request asked for (model, settings)."""

    def encoder(offset: int, message_id: str) -> Encoder:
        return ResponseEventEncoder(response)

    return replace(RESPONSE_EVENTS, new_encoder=encoder)
