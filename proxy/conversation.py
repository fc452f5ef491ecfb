"""What the client asked for, in the proxy's own words, independent of any upstream API.

Beyond text (issue 27, SPEC §5h): images a user attached, the function tools the model may
call, the calls an assistant turn made and the results a `tool` turn gives back, and the
structured response asked for. Each dialect renders these in its own shapes
(proxy/dialects/), and says what it can carry (`Capabilities`): what it cannot is refused by
the request model, naming its field, once the model is chosen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from proxy.settings import ReasoningEffort

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True, frozen=True)
class Image:
    """An image a user attached: a `data:` URL (its bytes) or an https link (never fetched by
    the proxy: it goes upstream as a link, or is refused where the dialect needs the bytes)."""

    url: str
    detail: str | None = None  # OpenAI's `detail` hint, passed where the dialect has it

    @property
    def inline(self) -> tuple[str, str] | None:
        """(media type, base64 data) of a `data:` URL; None for a link."""
        if not self.url.startswith("data:"):
            return None
        header, _, data = self.url.partition(",")
        media_type = header.removeprefix("data:").partition(";")[0]
        return media_type or "image/png", data


@dataclass(slots=True, frozen=True)
class ToolCall:
    """A call an assistant turn made: its id, the function's name, its arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True, frozen=True)
class Thinking:
    """A thinking block an assistant turn made, sent back as it came (Anthropic's Messages API,
    issue 29): its thoughts and signature, or a redacted block's opaque `data`. Only the
    anthropic dialect carries it; the others drop it (their models never made it)."""

    thinking: str = ""
    signature: str = ""
    redacted_data: str | None = None


@dataclass(slots=True, frozen=True)
class Message:
    role: Role
    content: str
    images: tuple[Image, ...] = ()  # a user turn's attachments, after its text
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls
    tool_call_id: str | None = None  # a `tool` turn: the call it answers
    thinking: tuple[Thinking, ...] = ()  # an assistant turn's thinking, before its text


@dataclass(slots=True, frozen=True)
class Tool:
    """A function the model may call: its name, what it does, its parameters' JSON Schema."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(slots=True, frozen=True)
class ForcedTool:
    """`tool_choice` naming one function: the model must call it."""

    name: str


ToolChoice = Literal["auto", "none", "required"] | ForcedTool


@dataclass(slots=True, frozen=True)
class ResponseFormat:
    """A structured answer: any JSON object, or one that follows a JSON Schema."""

    type: Literal["json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


@dataclass(slots=True, frozen=True)
class Capabilities:
    """What a dialect can carry beyond text."""

    tools: bool = False
    images: bool = False  # as bytes (`data:` URLs)
    image_links: bool = False  # as links the upstream fetches
    response_format: bool = False
    forced_tools: bool = False  # tool_choice `required` or a named function
    top_k: bool = False


@dataclass(slots=True, frozen=True)
class Conversation:
    """A validated request: messages in order, the system prompt apart, sampling options."""

    messages: tuple[Message, ...]
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    reasoning: ReasoningEffort | None = None  # None: the upstream's default
    # The thinking tokens asked for exactly (the Messages API's `budget_tokens`), for a dialect
    # that takes a budget; the others take `reasoning`, the effort it maps to.
    reasoning_budget: int | None = None
    top_k: int | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    def reasoning_or(self, default: ReasoningEffort | None) -> Conversation:
        """This conversation, asking for the model's default effort when it asks for none."""
        if self.reasoning is not None or default is None:
            return self
        return dataclasses.replace(self, reasoning=default)

    def beyond(self, can: Capabilities) -> tuple[str, str] | None:
        """The first field asking what a dialect that `can` this much cannot carry, and what
        it asks for; None when it carries all of it."""
        if self.tools and not can.tools:
            return "tools", "tools"
        forced = self.tool_choice == "required" or isinstance(self.tool_choice, ForcedTool)
        if forced and self.tools and not can.forced_tools:
            return "tool_choice", "a required or named tool choice"
        if self.response_format is not None and not can.response_format:
            return "response_format", "a structured response format"
        if self.top_k is not None and not can.top_k:
            return "top_k", "top_k sampling"
        for index, message in enumerate(self.messages):
            if (message.tool_calls or message.role == "tool") and not can.tools:
                field = "tool_calls" if message.tool_calls else "role"
                return f"messages.[{index}].{field}", "tool calls and their results"
            for image in message.images:
                inline = image.inline is not None
                if not (can.images if inline else can.image_links):
                    what = "images" if inline else "image links (the proxy fetches nothing)"
                    return f"messages.[{index}].content", what
        return None

    def characters(self) -> int:
        """The prompt's characters: the system prompt and every message's text."""
        return len(self.system or "") + sum(len(message.content) for message in self.messages)

    def as_prompt(self) -> str:
        """One plain-text prompt, for completion-style APIs that take no message list."""
        if len(self.messages) == 1 and self.system is None:
            return self.messages[0].content
        parts = [self.system] if self.system else []
        parts.extend(f"{message.role}: {message.content}" for message in self.messages)
        return "\n\n".join(parts) + "\n\nassistant:"
