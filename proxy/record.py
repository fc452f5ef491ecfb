"""What one stream did, from request to end, and what one upstream attempt did: the records
its observers (proxy/observers/) are handed."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy.errors import (
    ProxyError,
    UpstreamClosedEarly,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.parts import Part, ReasoningSignature, ToolCallDelta, characters
from proxy.urls import PublicURL
from proxy.values import NO_USAGE, BudgetNote, Done, Outcome, Usage, outcome_of, utf8_length


@dataclass(slots=True, frozen=True)
class Arrival:
    """How the request came in, as a trace names it: its method and the W3C trace context
    its caller sent (the traceparent and tracestate headers)."""

    method: str = "-"
    traceparent: str | None = None
    tracestate: str | None = None


NO_ARRIVAL = Arrival()


@dataclass(slots=True)
class StreamRecord:
    """Filled in as the stream goes; final once `finish` has run (then `outcome` and
    `ended` are set). Times are `time.monotonic()` seconds."""

    request_id: str
    route: str = "-"  # the path the stream was asked for (/v1/stream, /v1/chat/completions, ...)
    model: str = "-"
    client: str | None = None
    started: float = field(default_factory=time.monotonic)
    upstream: str | None = None
    attempts: int = 0
    status: int = 200
    outcome: Outcome | None = None
    error: str | None = None
    error_type: str | None = None
    first_delta_at: float | None = None  # the commit point
    first_part_at: float | None = None  # the first part of any kind (what deadlines count)
    first_text_at: float | None = None  # the first text: a thinking model's time to answer
    ended: float | None = None
    deltas: int = 0  # text deltas
    bytes: int = 0  # text bytes (UTF-8)
    reasoning_deltas: int = 0
    reasoning_bytes: int = 0
    hedged: bool = False  # a second attempt raced the first for its first part (SPEC §5j)
    hedge_won: bool = False  # and got there first
    tool_calls: int = 0  # calls begun (never their names or arguments: SPEC §5h)
    tool_call_bytes: int = 0  # their arguments' bytes
    tool_call_deltas: int = 0  # their pieces
    usage: Usage = NO_USAGE  # as the upstream reported it
    finish_reason: str | None = None  # as the upstream reported it, normalised
    went_upstream: bool = False  # `stream_started` was observed
    arrival: Arrival = NO_ARRIVAL
    output_format: str | None = None  # the representation negotiated (formats/)
    resumable: bool = False  # kept for a resume (PROXY_RESUME)
    budget: BudgetNote | None = None  # a named key with budgets

    @property
    def ttfb(self) -> float | None:
        """Seconds from the request to the commit point (None if it was never reached)."""
        return None if self.first_delta_at is None else self.first_delta_at - self.started

    @property
    def first_part(self) -> float | None:
        """Seconds from the request to the first part of any kind (the time to first token)."""
        return None if self.first_part_at is None else self.first_part_at - self.started

    @property
    def first_text(self) -> float | None:
        """Seconds from the request to the first text (after a thinking model's thoughts)."""
        return None if self.first_text_at is None else self.first_text_at - self.started

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    @property
    def rejected(self) -> bool:
        """Answered with an error before the commit point (a client that left was not)."""
        return self.status != 200 and self.outcome != "client_disconnected"

    def count(self, part: Part) -> None:
        """A part came from the upstream: count it by kind (whether or not the client's
        format carries it: the upstream made it, and bills it)."""
        if type(part) is str:
            if self.first_text_at is None:
                self.first_text_at = time.monotonic()
            self.deltas += 1
            self.bytes += utf8_length(part)
        elif isinstance(part, ToolCallDelta):
            self.tool_calls += part.id is not None
            self.tool_call_deltas += 1
            self.tool_call_bytes += utf8_length(part.arguments)
        elif isinstance(part, ReasoningSignature):
            return  # opaque, and no output of the model's: nothing to count
        else:
            self.reasoning_deltas += 1
            self.reasoning_bytes += utf8_length(characters(part))

    @property
    def output_bytes(self) -> int:
        """Every byte the upstream produced as output: text, reasoning and call arguments, all
        billed as output tokens."""
        return self.bytes + self.reasoning_bytes + self.tool_call_bytes

    @property
    def output_deltas(self) -> int:
        """Every output part of every kind: about one token each (servers send one a delta;
        deltas one read brought are one part)."""
        return self.deltas + self.reasoning_deltas + self.tool_call_deltas

    def failed(self, exc: ProxyError) -> None:
        """The stream ends with this failure, unless its end was already written down."""
        if self.outcome is None:
            self.outcome = outcome_of(exc)
            self.error = exc.message
            self.error_type = exc.error_type

    def refused(self, exc: ProxyError) -> None:
        """The request ends with this error, answered before the commit point."""
        self.status = exc.status_code
        self.failed(exc)

    def reported(self, ending: Done) -> None:
        """What the attempt that reached the commit point said of its end."""
        self.finish_reason = ending.finish_reason
        self.usage = ending.usage or NO_USAGE

    def finish(self) -> None:
        """The stream is over: stamp the end."""
        self.ended = time.monotonic()
        if self.outcome is None:  # nothing said otherwise: nobody read to the end
            self.outcome = "client_disconnected"

    def fields(self) -> dict[str, Any]:
        """The stream's one log line (SPEC §1)."""
        ttfb, duration = self.ttfb, self.duration
        fields: dict[str, Any] = {
            "request_id": self.request_id,
            "route": self.route,
            "model": self.model,
            "client": self.client,
            "upstream": self.upstream,
            "status": self.status,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "ttfb_ms": _ms(ttfb) if ttfb else None,
            "first_part_ms": _ms(self.first_part),
            "first_text_ms": _ms(self.first_text),
            "duration_ms": _ms(duration or 0.0),
            "deltas": self.deltas,
            "bytes": self.bytes,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
        }
        if self.reasoning_deltas:  # a thinking model's thoughts: counted, never written
            fields["reasoning_deltas"] = self.reasoning_deltas
            fields["reasoning_bytes"] = self.reasoning_bytes
        if self.tool_calls:
            fields["tool_calls"] = self.tool_calls
        if self.hedged:
            fields["hedge"] = "won" if self.hedge_won else "lost"
        budget = self.budget
        if budget is not None and budget.settled_tokens is not None:
            fields["reserved_tokens"] = budget.reserved_tokens
            fields["settled_tokens"] = budget.settled_tokens
            fields["usage_source"] = "estimated" if budget.estimated else "reported"
        if self.error:
            fields["error"] = self.error
        return fields


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


AttemptResult = Literal[
    "ok",
    "connect_error",
    "timeout",
    "status_1xx",
    "status_2xx",  # anything but 200 is a failed attempt
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "dropped",
    "protocol_error",
    "cancelled",
    "hedge_lost",  # the other racer's first part came first (proxy/hedge.py)
]
_STATUS_CLASSES: dict[int, AttemptResult] = {
    1: "status_1xx",
    2: "status_2xx",
    3: "status_3xx",
    4: "status_4xx",
    5: "status_5xx",
}


def attempt_result(error: UpstreamError) -> AttemptResult:
    """How an upstream attempt failed (`ok` and `cancelled` need no error: the caller
    knows them)."""
    if isinstance(error, UpstreamStatusError):
        return _STATUS_CLASSES[min(max(error.upstream_status // 100, 1), 5)]
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamUnavailable):
        return "connect_error"
    if isinstance(error, UpstreamClosedEarly):
        return "dropped"
    return "protocol_error"


@dataclass(slots=True, frozen=True)
class AttemptStarted:
    """One upstream attempt, about to send its request."""

    stream: StreamRecord
    model: str  # as configured
    dialect: str
    upstream_model: str  # as the upstream is asked for it
    replica: PublicURL
    # The request's JSON body: its parameters, and the prompt, which observers never keep.
    body: Mapping[str, Any]


@dataclass(slots=True, frozen=True)
class AttemptRecord:
    """One upstream attempt, once it has ended."""

    model: str
    replica: PublicURL
    result: AttemptResult
    stream: StreamRecord | None = None  # whose attempt it was
    error: UpstreamError | None = None  # what failed it
