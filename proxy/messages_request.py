"""POST /v1/messages: Anthropic's Messages API request, as the proxy's Conversation (SPEC §5i,
issue 29).

    system                  a string or text blocks, joined
    messages                user turns: `text`, `image` (base64, or an https `url` source) and
                            `tool_result` blocks (each a `tool` turn, before the turn's text);
                            assistant turns: `text`, `tool_use` (a call; its input as JSON
                            text) and `thinking` / `redacted_thinking` blocks (sent back
                            upstream to an anthropic dialect alone: no other model made them)
    thinking                `enabled` with its `budget_tokens` (exact for an anthropic
                            dialect, the nearest effort at or above it for the others),
                            `disabled` (effort "none")
    tools, tool_choice      custom tools; auto, any (`required`), tool (a named one), none;
                            `disable_parallel_tool_use` as parallel_tool_calls false
    top_k                   relayed where the dialect has it (anthropic, ollama, tgi): a 400
                            naming it elsewhere (proxy/opening.py refuse_beyond)
    metadata                accepted, not relayed (its `user_id` is for Anthropic's abuse checks)

What the proxy never relays is a 400 naming it (UnsupportedParameter, as on the OpenAI route):
server tools (`web_search_...`, `bash_...`), `document` and other block kinds, images inside a
tool result, `mcp_servers`, `container`, and `anthropic-beta` features that change what the API
does (`check_headers`). Blocks' `cache_control` and `citations` and a result's `is_error` are
hints the answer's shape does not depend on: ignored, as fields the API does not know are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.conversation import (
    Conversation,
    ForcedTool,
    Image,
    Message,
    Thinking,
    Tool,
    ToolCall,
    ToolChoice,
)
from proxy.dialects.anthropic_shapes import MIN_THINKING_BUDGET, THINKING_BUDGETS
from proxy.errors import UnsupportedParameter
from proxy.requests import StreamBody
from proxy.settings import ReasoningEffort

_IGNORED = ConfigDict(extra="ignore", strict=True)

# Betas that change nothing the proxy relays (a client's name, finer or cheaper streaming of
# the same events, prompt caching's hints, thinking between calls where the model does it):
# accepted. Any other is refused by name, never silently dropped.
RELAYED_BETAS = frozenset(
    {
        "claude-code-20250219",
        "fine-grained-tool-streaming-2025-05-14",
        "interleaved-thinking-2025-05-14",
        "token-efficient-tools-2025-02-19",
        "prompt-caching-2024-07-31",
    }
)


def check_headers(headers: Mapping[str, str]) -> None:
    """`anthropic-version` is accepted whatever it says; `anthropic-beta` only lists
    RELAYED_BETAS."""
    for beta in (headers.get("anthropic-beta") or "").split(","):
        name = beta.strip()
        if name and name not in RELAYED_BETAS:
            message = f"anthropic-beta: the beta {name[:80]!r} is not relayed by this proxy"
            raise UnsupportedParameter(message, param="anthropic-beta")


class ImageSource(BaseModel):
    model_config = _IGNORED
    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ResultPart(BaseModel):
    model_config = _IGNORED
    type: str
    text: str | None = None


class ContentBlock(BaseModel):
    """One block of a message's content; which fields count depends on its `type`."""

    model_config = _IGNORED
    type: str
    text: str | None = None
    source: ImageSource | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[ResultPart] | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None

    def result_text(self) -> str:
        if isinstance(self.content, str) or self.content is None:
            return self.content or ""
        return "".join(part.text or "" for part in self.content)


_BLOCKS: dict[str, frozenset[str]] = {
    "user": frozenset({"text", "image", "tool_result"}),
    "assistant": frozenset({"text", "tool_use", "thinking", "redacted_thinking"}),
}


class AnthropicMessage(BaseModel):
    model_config = _IGNORED
    role: Literal["user", "assistant"]
    content: list[ContentBlock]

    @field_validator("content", mode="before")
    @classmethod
    def _string_is_one_text_block(cls, value: object) -> object:
        return [{"type": "text", "text": value}] if isinstance(value, str) else value

    def refuse_never_relayed(self, index: int) -> None:
        for number, block in enumerate(self.content):
            where = f"messages.[{index}].content.[{number}]"
            if block.type not in _BLOCKS[self.role]:
                message = (
                    f"{where}.type: {block.type[:40]!r} blocks of {self.role} turns are not relayed"
                )
                raise UnsupportedParameter(message, param=f"{where}.type")
            if block.type == "image":
                _image(block, where)
            results = block.content if block.type == "tool_result" else None
            if isinstance(results, list) and any(part.type != "text" for part in results):
                message = f"{where}.content: only text results are relayed"
                raise UnsupportedParameter(message, param=f"{where}.content")
            if block.type in ("tool_use", "tool_result") and not (block.id or block.tool_use_id):
                message = f"{where}: a {block.type} block needs its id"
                raise UnsupportedParameter(message, param=where)

    def as_messages(self) -> list[Message]:
        text = "".join(block.text or "" for block in self.content if block.type == "text")
        if self.role == "assistant":
            return [Message("assistant", text, tool_calls=_calls(self), thinking=_thoughts(self))]
        results = [
            Message("tool", block.result_text(), tool_call_id=block.tool_use_id)
            for block in self.content
            if block.type == "tool_result"
        ]
        images = tuple(_image(block, "") for block in self.content if block.type == "image")
        if text or images or not results:
            results.append(Message("user", text, images))
        return results


class CustomTool(BaseModel):
    model_config = _IGNORED
    type: str | None = None
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoiceRequest(BaseModel):
    model_config = _IGNORED
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingRequest(BaseModel):
    model_config = _IGNORED
    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = Field(default=None, ge=MIN_THINKING_BUDGET)


class MessagesRequest(StreamBody):
    """Anthropic's request body: `model` and `max_tokens` are required, as Anthropic's API
    requires them."""

    model: str
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    stream: bool | None = None
    stop_sequences: list[str] | None = Field(default=None, max_length=16)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    thinking: ThinkingRequest | None = None
    tools: list[CustomTool] | None = None
    tool_choice: ToolChoiceRequest | None = None
    metadata: dict[str, Any] | None = None
    # Asked for, and refused: the proxy runs no servers of the client's.
    mcp_servers: list[Any] | None = None
    container: Any = None

    @model_validator(mode="after")
    def _only_what_is_relayed(self) -> MessagesRequest:
        if self.mcp_servers:
            raise UnsupportedParameter(
                "mcp_servers: MCP servers are not relayed", param="mcp_servers"
            )
        if self.container is not None:
            raise UnsupportedParameter("container: containers are not relayed", param="container")
        for index, tool in enumerate(self.tools or ()):
            if tool.type not in (None, "custom"):
                param = f"tools.[{index}].type"
                message = f"{param}: only custom tools are relayed, not {tool.type[:40]!r}"
                raise UnsupportedParameter(message, param=param)
        if (
            self.tool_choice is not None
            and self.tool_choice.type == "tool"
            and not self.tool_choice.name
        ):
            raise ValueError("tool_choice.name: a tool choice of type tool names the tool")
        enabled = self.thinking is not None and self.thinking.type == "enabled"
        budget = self.thinking.budget_tokens if self.thinking is not None else None
        if enabled and (budget is None or budget >= self.max_tokens):
            raise ValueError("thinking.budget_tokens: at least 1024 and below max_tokens")
        for index, turn in enumerate(self.messages):
            turn.refuse_never_relayed(index)
        return self

    def conversation(self) -> Conversation:
        choice = self.tool_choice
        return Conversation(
            messages=tuple(m for message in self.messages for m in message.as_messages()),
            system=_system(self.system),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=tuple(self.stop_sequences) if self.stop_sequences else None,
            reasoning=_effort(self.thinking),
            reasoning_budget=self.thinking.budget_tokens if self.thinking else None,
            tools=tuple(
                Tool(tool.name, tool.description, tool.input_schema) for tool in self.tools or ()
            ),
            tool_choice=_tool_choice(choice),
            parallel_tool_calls=False if choice and choice.disable_parallel_tool_use else None,
        )

    def resume_id(self, given_request_id: str | None) -> str | None:
        return None  # Anthropic's API has no resume: neither has this route

    def response_message_id(self) -> str:
        """The message's id, as Anthropic spells its ids."""
        return "msg_" + os.urandom(12).hex()


def _image(block: ContentBlock, where: str) -> Image:
    source = block.source
    if source is not None and source.type == "base64" and source.data and source.media_type:
        return Image(f"data:{source.media_type};base64,{source.data}")
    if source is not None and source.type == "url" and (source.url or "").startswith("https://"):
        return Image(source.url or "")
    message = f"{where}.source: an image is base64 data or an https url"
    raise UnsupportedParameter(message, param=f"{where}.source")


def _calls(message: AnthropicMessage) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(block.id or "", block.name or "", orjson.dumps(block.input or {}).decode())
        for block in message.content
        if block.type == "tool_use"
    )


def _thoughts(message: AnthropicMessage) -> tuple[Thinking, ...]:
    return tuple(
        Thinking(block.thinking or "", block.signature or "")
        if block.type == "thinking"
        else Thinking(redacted_data=block.data or "")
        for block in message.content
        if block.type in ("thinking", "redacted_thinking")
    )


def _system(system: str | list[ContentBlock] | None) -> str | None:
    if isinstance(system, list):
        system = "\n\n".join(block.text or "" for block in system if block.type == "text")
    return system or None


def _effort(thinking: ThinkingRequest | None) -> ReasoningEffort | None:
    """The effort a budget asks for: the least whose anthropic budget holds it."""
    if thinking is None:
        return None
    if thinking.type == "disabled":
        return "none"
    budget = thinking.budget_tokens or 0
    fits = [effort for effort, tokens in THINKING_BUDGETS.items() if tokens >= budget]
    return fits[0] if fits else "high"


def _tool_choice(choice: ToolChoiceRequest | None) -> ToolChoice | None:
    if choice is None:
        return None
    if choice.type == "tool":
        return ForcedTool(choice.name or "")
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]  # type: ignore[return-value]
