"""POST /v1/responses: OpenAI's Responses API request, as the proxy's Conversation (SPEC §5i).

`input` (a string, or items: messages with `input_text` and `input_image` parts, the
`function_call` items of earlier turns and the `function_call_output` items answering them),
`instructions` (the system prompt), sampling, `reasoning.effort`, function `tools`,
`tool_choice`, `parallel_tool_calls` and `text.format` become the Conversation; whether the
model's dialect can carry them is decided once the model is chosen (proxy/opening.py).

The proxy keeps no state (SPEC §5i): what needs it is refused with a 400 naming the field,
never silently dropped: `previous_response_id`, `conversation`, `background`, a stored
`prompt`, an `item_reference` to anything but reasoning, files by `file_id`. Tools built into
OpenAI's platform (web search, file search, computer use, ...) are refused the same way.
`store` is accepted and answered as `false`. The `reasoning` items a client sends back, and
references to them, are not relayed: no dialect takes a model's earlier thoughts back (the
Chat Completions route ignores them too), so a reference to one loses nothing. Fields that
only tune OpenAI's own service (`service_tier`, `include`, `truncation`, `prompt_cache_key`,
...) are ignored, as the other routes ignore unknown fields.
"""

from __future__ import annotations

import os
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.conversation import (
    Conversation,
    ForcedTool,
    Image,
    Message,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolChoice,
)
from proxy.errors import UnsupportedParameter
from proxy.requests import StreamBody
from proxy.settings import ReasoningEffort

_IGNORED = ConfigDict(extra="ignore", strict=True)
# The prefix of the reasoning items' ids the proxy makes (proxy/formats/responses_api.py).
REASONING_ID_PREFIX: Final = "rs_"
# Request fields that need state the proxy does not keep, and why.
_STATEFUL: Final = {
    "previous_response_id": "the proxy keeps no responses: send the whole input",
    "conversation": "the proxy keeps no conversations: send the whole input",
    "background": "a background response is kept to be fetched later: the proxy keeps none",
    "prompt": "a stored prompt lives on OpenAI's platform: send its text as input",
}


class InputContent(BaseModel):
    """A part of a message's content: `input_text` (a user's, system's) or `output_text` (an
    earlier assistant turn's), or `input_image` (a `data:` URL or an https link)."""

    model_config = _IGNORED
    type: str
    text: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputItem(BaseModel):
    """One item of `input`: a message (its `type` may be left out), a `function_call`, a
    `function_call_output`, a `reasoning` item or an `item_reference`."""

    model_config = _IGNORED
    type: str = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: list[InputContent] | None = None
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: list[InputContent] | None = None

    @field_validator("content", "output", mode="before")
    @classmethod
    def _string_is_one_text_part(cls, value: object) -> object:
        if isinstance(value, str):
            return [{"type": "input_text", "text": value}]
        return value

    def text(self) -> str:
        parts = self.output if self.type == "function_call_output" else self.content
        return "".join(part.text or "" for part in parts or () if part.text is not None)


class FunctionTool(BaseModel):
    """A tool: a function (the Responses API's flat shape), or one refused by its `type`."""

    model_config = _IGNORED
    type: str
    name: str | None = Field(default=None, min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedTool(BaseModel):
    model_config = _IGNORED
    type: str
    name: str | None = None


class ReasoningOptions(BaseModel):
    model_config = _IGNORED
    effort: ReasoningEffort | None = None
    summary: str | None = None  # the proxy relays the upstream's thoughts as they come


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None

    def as_format(self) -> ResponseFormat | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return ResponseFormat("json_object")
        return ResponseFormat(
            "json_schema", self.name, self.json_schema, self.strict, self.description
        )


class TextOptions(BaseModel):
    model_config = _IGNORED
    format: TextFormat | None = None


class ResponsesRequest(StreamBody):
    """OpenAI's Responses request body; `model` and `input` are required, as OpenAI's API
    requires them."""

    model: str
    input: list[InputItem] = Field(min_length=1)
    instructions: str | None = None
    stream: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    reasoning: ReasoningOptions | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedTool | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    store: bool | None = None  # answered as false: nothing is stored
    # Asked for, and refused: they need state the proxy does not keep.
    previous_response_id: str | None = None
    # `conversation` names a method of every request model.
    stored_conversation: Any = Field(default=None, alias="conversation")
    background: bool | None = None
    prompt: Any = None

    @field_validator("input", mode="before")
    @classmethod
    def _string_is_one_user_message(cls, value: object) -> object:
        if isinstance(value, str):
            return [{"type": "message", "role": "user", "content": value}]
        return value

    @model_validator(mode="after")
    def _only_what_is_relayed(self) -> ResponsesRequest:
        asked = (self.previous_response_id, self.stored_conversation, self.background, self.prompt)
        for (field, why), value in zip(_STATEFUL.items(), asked, strict=True):
            if value not in (None, False):
                raise UnsupportedParameter(f"{field}: {why}", param=field)
        refuse_tools_never_relayed(self)
        for index, item in enumerate(self.input):
            refuse_item_never_relayed(index, item)
        self.max_tokens = self.max_output_tokens
        return self

    def conversation_messages(self) -> tuple[Message, ...]:
        messages: list[Message] = []
        for item in self.input:
            message = _message(item)
            if message is None:
                continue
            if message.role == "assistant" and messages and messages[-1].role == "assistant":
                messages[-1] = _joined(messages[-1], message)
            else:
                messages.append(message)
        return tuple(messages)

    def conversation(self) -> Conversation:
        text_format = self.text.format if self.text is not None else None
        return Conversation(
            messages=self.conversation_messages(),
            system=self.instructions or None,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            reasoning=self.reasoning.effort if self.reasoning is not None else None,
            tools=tuple(_tool(tool) for tool in self.tools or ()),
            tool_choice=_tool_choice(self.tool_choice),
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=text_format.as_format() if text_format is not None else None,
        )

    def echo(self) -> dict[str, Any]:
        """The request's settings as OpenAI repeats them in every response object."""
        text = self.text.format if self.text is not None else None
        reasoning = self.reasoning or ReasoningOptions()
        choice = self.tool_choice
        return {
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": self.metadata or {},
            "parallel_tool_calls": self.parallel_tool_calls is not False,
            "reasoning": {"effort": reasoning.effort, "summary": reasoning.summary},
            "temperature": self.temperature,
            "text": {"format": text.model_dump(by_alias=True) if text else {"type": "text"}},
            "tool_choice": choice.model_dump()
            if isinstance(choice, NamedTool)
            else choice or "auto",
            "tools": [tool.model_dump() for tool in self.tools or ()],
            "top_p": self.top_p,
            "truncation": "disabled",
            "user": self.user,
        }

    def resume_id(self, given_request_id: str | None) -> str | None:
        return None  # the Responses API resumes stored responses only: none are kept

    def response_message_id(self) -> str:
        """The response's id, as OpenAI spells its ids."""
        return "resp_" + os.urandom(16).hex()


def refuse_tools_never_relayed(body: ResponsesRequest) -> None:
    for index, tool in enumerate(body.tools or ()):
        if tool.type != "function" or tool.name is None:
            param = f"tools.[{index}].type"
            message = f"{param}: only function tools are relayed, not {tool.type[:40]!r}"
            raise UnsupportedParameter(message, param=param)
    choice = body.tool_choice
    if isinstance(choice, NamedTool) and (choice.type != "function" or not choice.name):
        message = f"tool_choice: only a function is relayed, not {choice.type[:40]!r}"
        raise UnsupportedParameter(message, param="tool_choice")


def refuse_item_never_relayed(index: int, item: InputItem) -> None:
    where = f"input.[{index}]"
    if item.type == "item_reference" and not (item.id or "").startswith(REASONING_ID_PREFIX):
        message = (
            f"{where}: an item_reference names an item stored by OpenAI; the proxy keeps no "
            "state: send the item itself (with the AI SDK: providerOptions.openai.store = false)"
        )
        raise UnsupportedParameter(message, param=where)
    if item.type in ("function_call", "function_call_output") and not item.call_id:
        raise UnsupportedParameter(
            f"{where}.call_id: a call needs its id", param=f"{where}.call_id"
        )
    if item.type == "function_call" and not item.name:
        raise UnsupportedParameter(f"{where}.name: a call needs its name", param=f"{where}.name")
    if item.type == "message" and item.role is None:
        raise UnsupportedParameter(f"{where}.role: a message needs its role", param=f"{where}.role")
    if item.type not in _ITEM_TYPES:
        message = f"{where}.type: {item.type[:40]!r} items are not relayed"
        raise UnsupportedParameter(message, param=f"{where}.type")
    if item.type == "function_call_output":
        for number, part in enumerate(item.output or ()):
            if part.type not in _TEXT_PARTS:
                param = f"{where}.output.[{number}].type"
                message = f"{param}: a call's output is relayed as text, not {part.type[:40]!r}"
                raise UnsupportedParameter(message, param=param)
    for number, part in enumerate(item.content or ()):
        refuse_part_never_relayed(f"{where}.content.[{number}]", part)


_ITEM_TYPES: Final = frozenset(
    {"message", "function_call", "function_call_output", "reasoning", "item_reference"}
)
_TEXT_PARTS: Final = frozenset({"input_text", "output_text", "text"})


def refuse_part_never_relayed(where: str, part: InputContent) -> None:
    if part.type in _TEXT_PARTS:
        return
    if part.type != "input_image":
        message = f"{where}.type: {part.type[:40]!r} parts are not relayed, only text and images"
        raise UnsupportedParameter(message, param=f"{where}.type")
    if part.file_id is not None or part.image_url is None:
        message = f"{where}.file_id: files live on OpenAI's platform: send the image_url"
        raise UnsupportedParameter(message, param=f"{where}.file_id")
    if not part.image_url.startswith(("data:image/", "https://")):
        message = f"{where}.image_url: an image is a data:image/ URL or an https link"
        raise UnsupportedParameter(message, param=f"{where}.image_url")


def _message(item: InputItem) -> Message | None:
    """The item as a Conversation message; None for what is not relayed (reasoning)."""
    if item.type == "function_call":
        call = ToolCall(item.call_id or "", item.name or "", item.arguments or "")
        return Message("assistant", "", tool_calls=(call,))
    if item.type == "function_call_output":
        return Message("tool", item.text(), tool_call_id=item.call_id)
    if item.type != "message" or item.role is None:
        return None
    images = tuple(
        Image(part.image_url, part.detail)
        for part in item.content or ()
        if part.type == "input_image" and part.image_url is not None
    )
    return Message(_role(item.role), item.text(), images)


def _joined(first: Message, second: Message) -> Message:
    """One assistant turn: the Responses API spells a turn's text and each of its calls as
    items of their own; the dialects take the text and the calls of a turn together."""
    return Message(
        "assistant",
        first.content + second.content,
        first.images + second.images,
        first.tool_calls + second.tool_calls,
    )


def _tool(tool: FunctionTool) -> Tool:
    assert tool.name is not None, "refused before"
    return Tool(tool.name, tool.description, tool.parameters, tool.strict)


def _tool_choice(choice: str | NamedTool | None) -> ToolChoice | None:
    if isinstance(choice, NamedTool):
        assert choice.name is not None, "refused before"
        return ForcedTool(choice.name)
    return choice  # type: ignore[return-value]


def _role(role: Literal["user", "assistant", "system", "developer"]) -> Role:
    # OpenAI's `developer` messages are its newer models' system messages.
    return "system" if role == "developer" else role
