"""What a prompt asks of the fake: whitespace-separated `@name=value` words anywhere in it.

    @text=tricky       the tricky text instead of the friendly reply (see `replies`)
    @tokens=N          text tokens to stream (default: the constructor's `tokens`, else the
                       whole reply)
    @think=N           N reasoning tokens before the text, in the API's own shape (openai chat,
                       anthropic, ollama; ignored by the others); a request that asks for
                       reasoning without it gets 4, one that declines gets none
                       (see `Directives.thinking_tokens`)
    @reasoning_field=reasoning  openai chat: `delta.reasoning` instead of `reasoning_content`
    @think_gap=SECONDS one extra pause after half the reasoning tokens (rounded up)
    @call=N            N tool calls instead of text (2: parallel calls), the i-th to the
                       request's i-th tool (its first if it has fewer), in the API's own shape
                       (openai chat, anthropic, ollama; ignored by the others, and by a request
                       with no `tools`); a request whose last turn carries tool results gets
                       text saying what they were instead (see `calls`)
    @text_before_call=1  a few words of text before the calls, as models often say
    @arg_split=K       the calls' arguments streamed K characters a fragment (default 7);
                       Ollama sends its calls whole, in one line, once all would have come
    @delay=SECONDS     pause before each token, reasoning, text or argument fragment (default:
                       the constructor's `token_delay`)
    @fault=NAME        one of `Fault`; `@after=K` text tokens (default 2) precede a mid-stream
                       one (reasoning tokens are not counted: the fault comes in the answer); in
                       a reply that calls, K argument fragments, so the fault lands inside a
                       call's arguments (the text before the calls is not counted either)
    @status=NNN        with `@fault=status` (default 500); `@retry_after=S` adds `Retry-After`,
                       `@echo_auth=1` puts the request's credential in the error message, as
                       careless upstreams do
    @fail_times=N      only the first N requests with this exact prompt get the fault
    @split=N           write the body N bytes at a time, each piece its own chunk and write
    @model_missing=1   ollama only: the 404 of a model that was never pulled
    @usage=0           report no token usage, as some servers do not
    @ignore_max_tokens=1  stream on past the request's max tokens (a reply is otherwise cut
                       there, reasoning tokens counted, as real servers do, and its end says
                       so: length, max_tokens)

Unknown directives are ignored; directives stay part of the prompt (and of its reply's seed).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Final, Literal, TypeVar, cast, get_args

Fault = Literal[
    "status",
    "hang-headers",
    "hang-before",
    "hang-mid",
    "drop-mid",
    "no-end",
    "malformed",
    "error-event",
]
FAULTS: Final[frozenset[str]] = frozenset(get_args(Fault))
MID_STREAM_FAULTS: Final[frozenset[str]] = frozenset(
    {"hang-mid", "drop-mid", "malformed", "error-event"}
)
Text = Literal["friendly", "tricky"]
# Where an OpenAI-compatible server puts reasoning: DeepSeek and older vLLM say
# `reasoning_content`, newer vLLM, llama.cpp and OpenRouter `reasoning`.
ReasoningField = Literal["reasoning_content", "reasoning"]

# What a request that asks for reasoning, and whose prompt does not say how much, gets.
DEFAULT_THINK: Final = 4
# Characters of a call's arguments a fragment: short enough that a JSON string, and a
# multi-byte character, spans fragments.
DEFAULT_ARG_SPLIT: Final = 7

_DIRECTIVE = re.compile(r"(?<!\S)@(\w+)=(\S+)")
_Default = TypeVar("_Default", bound=int | None)


def without_directives(prompt: str) -> str:
    return _DIRECTIVE.sub("", prompt) if "@" in prompt else prompt


def _integer(found: dict[str, str], name: str, default: _Default, least: int = 0) -> int | _Default:
    text = found.get(name, "")
    if not (text.isascii() and text.isdigit()) or int(text) < least:
        return default
    return int(text)


def _seconds(found: dict[str, str], name: str, default: float) -> float:
    try:
        value = float(found[name])
    except (KeyError, ValueError):
        return default
    return value if 0 <= value < float("inf") else default


@dataclass(slots=True, frozen=True)
class Directives:
    """The options one prompt asks for; a malformed value leaves its default."""

    tokens: int | None  # None: the whole reply
    delay: float
    text: Text = "friendly"
    fault: Fault | None = None
    after: int = 2
    status: int = 500
    retry_after: str | None = None
    echo_auth: bool = False
    fail_times: int | None = None
    split: int = 0
    model_missing: bool = False
    usage: bool = True
    ignore_max_tokens: bool = False
    think: int | None = None  # None: as the request asks
    think_gap: float = 0.0
    reasoning_field: ReasoningField = "reasoning_content"
    call: int = 0  # tool calls to make instead of text, when the request has tools
    text_before_call: bool = False
    arg_split: int = DEFAULT_ARG_SPLIT

    @classmethod
    def parse(cls, prompt: str, *, tokens: int | None, delay: float) -> Directives:
        found = dict(_DIRECTIVE.findall(prompt)) if "@" in prompt else {}
        if not found:
            return cls(tokens=tokens, delay=delay)
        fault = found.get("fault")
        status = _integer(found, "status", 500, least=100)
        fail_times = _integer(found, "fail_times", -1)
        return cls(
            tokens=_integer(found, "tokens", tokens),
            delay=_seconds(found, "delay", delay),
            text="tricky" if found.get("text") == "tricky" else "friendly",
            fault=cast(Fault, fault) if fault in FAULTS else None,
            after=_integer(found, "after", 2),
            status=status if status <= 999 else 500,
            retry_after=found.get("retry_after"),
            echo_auth=found.get("echo_auth") == "1",
            fail_times=fail_times if fail_times >= 0 else None,
            split=_integer(found, "split", 0, least=1),
            model_missing=found.get("model_missing") == "1",
            usage=found.get("usage") != "0",
            ignore_max_tokens=found.get("ignore_max_tokens") == "1",
            think=_integer(found, "think", None),
            think_gap=_seconds(found, "think_gap", 0.0),
            reasoning_field=(
                "reasoning" if found.get("reasoning_field") == "reasoning" else "reasoning_content"
            ),
            call=_integer(found, "call", 0),
            text_before_call=found.get("text_before_call") == "1",
            arg_split=_integer(found, "arg_split", DEFAULT_ARG_SPLIT, least=1),
        )

    def thinking_tokens(self, asked: bool | None) -> int:
        """Reasoning tokens for a request that asked for reasoning (True), declined it (False),
        or said nothing (None): a refusal wins over `@think`, as a real server's would."""
        if asked is False:
            return 0
        if self.think is not None:
            return self.think
        return DEFAULT_THINK if asked else 0


class FaultSchedule:
    """Which requests get their fault: all of them, or (`@fail_times=N`) the first N with the
    same prompt, counted per fake."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def takes_fault(self, prompt: str, directives: Directives) -> bool:
        if directives.fault is None:
            return False
        if directives.fail_times is None:
            return True
        self._counts[prompt] += 1
        return self._counts[prompt] <= directives.fail_times
