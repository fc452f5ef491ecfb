"""The values a stream is described by, defined once: how it ended and what it reported.

    Usage      token counts an upstream reported (either may be unknown)
    Done       the text is whole: why the upstream stopped, and its usage
    Failed     the stream failed after its commit point: the JSON error body (SPEC §2)
    Ending     Done | Failed, the last item of every stream, live or stored
    Outcome    how a request ended, as its log line and the metrics name it

Nothing here knows a dialect, a format or HTTP: the dialects, the encoders, the resume
stores and the observers all speak these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from proxy.errors import (
    ClientDisconnected,
    ErrorBody,
    ProxyError,
    ShuttingDown,
    UpstreamError,
    UpstreamTimeout,
)

Outcome = Literal[
    "completed", "client_disconnected", "upstream_error", "timeout", "rejected", "shutdown"
]


def outcome_of(exc: ProxyError) -> Outcome:
    if isinstance(exc, ClientDisconnected):
        return "client_disconnected"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, ShuttingDown):
        return "shutdown"
    if isinstance(exc, UpstreamError):
        return "upstream_error"
    return "rejected"


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(slots=True, frozen=True)
class Usage:
    """Tokens the upstream reported for one response; None where it did not say."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None  # of the completion tokens, where the upstream said

    @property
    def known(self) -> bool:
        return self.prompt_tokens is not None or self.completion_tokens is not None

    def read(self, counts: object, prompt_key: str | None, completion_key: str) -> Usage:
        """These counts with what an event's usage object carries under the API's names;
        anything but a count is ignored: usage must never fail a stream."""
        if not isinstance(counts, dict):
            return self
        prompt = counts.get(prompt_key) if prompt_key else None
        completion = counts.get(completion_key)
        details = counts.get("completion_tokens_details")  # OpenAI's, with reasoning_tokens
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
        return Usage(
            prompt if _is_count(prompt) else self.prompt_tokens,
            completion if _is_count(completion) else self.completion_tokens,
            reasoning if _is_count(reasoning) else self.reasoning_tokens,
        )

    def as_json(self) -> dict[str, int | None]:
        counts = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
        if self.reasoning_tokens is not None:
            counts["reasoning_tokens"] = self.reasoning_tokens
        return counts


NO_USAGE = Usage()


@dataclass(slots=True, frozen=True)
class BudgetNote:
    """What a named key's budget did for a stream (proxy/admission/budgets/): handed up by
    the ticket, written into the stream's record by its session."""

    reserved_tokens: int  # the prompt estimate plus the output allowance
    settled_tokens: int | None = None  # what it was charged, once settled
    estimated: bool = False  # settled from the proxy's estimate, not the upstream's count
    spend: float | None = None  # its settled cost at the model's prices (currency units)
    refused: str | None = None  # the window that refused it

    @property
    def refunded_tokens(self) -> int:
        return max(0, self.reserved_tokens - (self.settled_tokens or 0))


# Every dialect's word for why generation stopped, in OpenAI's vocabulary (the one most
# clients already know). Anything else is reported as "other".
_FINISH_REASONS = {
    "stop": "stop",
    "end_turn": "stop",  # anthropic
    "stop_sequence": "stop",  # anthropic, tgi
    "eos_token": "stop",  # tgi
    "length": "length",
    "max_tokens": "length",  # anthropic
    "model_length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",  # anthropic
    "function_call": "tool_calls",
}


def normalize_finish_reason(reason: str | None) -> str | None:
    """An upstream's finish reason as stop | length | content_filter | tool_calls | other."""
    if not reason:
        return None
    return _FINISH_REASONS.get(reason, "other")


@dataclass(slots=True, frozen=True)
class Done:
    """The stream is whole. `finish_reason` is normalized; None when the upstream did not say."""

    finish_reason: str | None = None
    usage: Usage | None = None
    # A `stop` at one of the request's stop sequences, where the upstream said so (Anthropic's
    # and TGI's `stop_sequence`): the Messages API tells it apart from a natural end.
    at_stop_sequence: bool = False

    @classmethod
    def reported(cls, finish_reason: str | None, usage: Usage) -> Done:
        """The end as an upstream reported it, in its own words."""
        normalized = normalize_finish_reason(finish_reason)
        known = usage if usage.known else None
        return cls(normalized, known, at_stop_sequence=finish_reason == "stop_sequence")

    def as_json(self) -> dict[str, Any]:
        return {
            "finish_reason": self.finish_reason,
            "usage": self.usage.as_json() if self.usage is not None else None,
        }


@dataclass(slots=True, frozen=True)
class Failed:
    """The stream failed after its commit point; `error` is the JSON error body (SPEC §2)."""

    error: ErrorBody

    @property
    def message(self) -> str:
        return self.error["error"]["message"]


Ending = Done | Failed


def ending_as_json(ending: Ending) -> dict[str, Any]:
    """An ending as stored with a resumable stream."""
    if isinstance(ending, Failed):
        return {"failed": ending.error}
    return {"done": ending.as_json()}


def ending_from_json(value: dict[str, Any]) -> Ending:
    if "failed" in value:
        return Failed(value["failed"])
    done = value["done"]
    usage = done["usage"]
    return Done(done["finish_reason"], Usage(**usage) if usage is not None else None)


def utf8_length(text: str) -> int:
    """The bytes `text` takes as UTF-8; ASCII is known without encoding (isascii is O(1))."""
    return len(text) if text.isascii() else len(text.encode())
