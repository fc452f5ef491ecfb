"""How a stream ended, in the proxy's own words: the values every output format renders."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.dialects import StreamParser
from proxy.errors import ErrorBody

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
class Usage:
    """Token counts an upstream reported; either may be unknown."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def as_json(self) -> dict[str, int | None]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


@dataclass(slots=True, frozen=True)
class Done:
    """The stream is whole. `finish_reason` is normalized; None when the upstream did not say."""

    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass(slots=True, frozen=True)
class Failed:
    """The stream failed after its commit point; `error` is the JSON error body (SPEC §2)."""

    error: ErrorBody

    @property
    def message(self) -> str:
        return self.error["error"]["message"]


Outcome = Done | Failed


def upstream_ending(parser: StreamParser | None) -> Done:
    """What a dialect's parser learned about the end of its text: why the upstream stopped
    and the tokens it counted, where it said (None where not)."""
    if parser is None:
        return Done()
    counted = parser.usage
    usage = None
    if counted.prompt is not None or counted.completion is not None:
        usage = Usage(counted.prompt, counted.completion)
    return Done(normalize_finish_reason(parser.finish_reason), usage)
