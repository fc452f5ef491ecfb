"""A Conversation in Anthropic's Messages API shapes (SPEC §5h).

an assistant's calls        `tool_use` blocks after its text, their input parsed from the
                            arguments' JSON text (Anthropic takes an object)
`tool` results              `tool_result` blocks in one user turn, consecutive results
                            together (and a user turn right after joins them: Anthropic
                            wants turns to alternate)
images                      `image` blocks before the text (Anthropic's advice): base64
                            from `data:` URLs, a `url` source for links
tools                       `input_schema` for OpenAI's `parameters`
tool_choice                 auto, any (`required`), tool (a named function), none;
                            `parallel_tool_calls: false` as `disable_parallel_tool_use`
an assistant's thinking     `thinking` (with its signature) and `redacted_thinking` blocks
                            first, as the Messages API wants them back (issue 29)
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.conversation import Conversation, ForcedTool, Image, Message, Thinking
from proxy.errors import UnsupportedParameter
from proxy.settings import ReasoningEffort

# Thinking tokens asked for per effort; Anthropic's least is 1024.
THINKING_BUDGETS: dict[ReasoningEffort, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 24576,
}
MIN_THINKING_BUDGET = 1024


def anthropic_messages(conversation: Conversation) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for message in conversation.messages:
        if message.role == "system":
            continue  # the Messages API takes the system prompt apart
        role = "assistant" if message.role == "assistant" else "user"
        blocks = content_blocks(message)
        if turns and turns[-1]["role"] == role == "user" and _has_results(turns[-1]):
            turns[-1]["content"] += blocks
        elif message.images or message.tool_calls or message.thinking or message.role == "tool":
            turns.append({"role": role, "content": blocks})
        else:
            turns.append({"role": role, "content": message.content})
    return turns


def _has_results(turn: dict[str, Any]) -> bool:
    content = turn["content"]
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


def content_blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        result = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        return [{**result, "content": message.content}]
    blocks = [thinking_block(thinking) for thinking in message.thinking]
    blocks += [image_block(image) for image in message.images]
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        block = {"type": "tool_use", "id": call.id, "name": call.name}
        blocks.append({**block, "input": call_input(call.arguments)})
    return blocks


def thinking_block(thinking: Thinking) -> dict[str, Any]:
    if thinking.redacted_data is not None:
        return {"type": "redacted_thinking", "data": thinking.redacted_data}
    return {"type": "thinking", "thinking": thinking.thinking, "signature": thinking.signature}


def image_block(image: Image) -> dict[str, Any]:
    inline = image.inline
    if inline is None:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    media_type, data = inline
    source = {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "image", "source": source}


def call_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic takes; "" is no arguments."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        message = "tool_calls: a call's arguments must be a JSON object for the anthropic dialect"
        raise UnsupportedParameter(message, param="messages")
    return value


def anthropic_tool_fields(conversation: Conversation) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if conversation.tools:
        fields["tools"] = [
            {
                "name": tool.name,
                **({"description": tool.description} if tool.description else {}),
                "input_schema": tool.parameters or {"type": "object", "properties": {}},
            }
            for tool in conversation.tools
        ]
    choice = conversation.tool_choice
    shaped: dict[str, Any] | None = None
    if isinstance(choice, ForcedTool):
        shaped = {"type": "tool", "name": choice.name}
    elif choice is not None:
        shaped = {"type": {"required": "any"}.get(choice, choice)}
    if conversation.parallel_tool_calls is False and conversation.tools:
        shaped = shaped or {"type": "auto"}
        if shaped["type"] != "none":
            shaped["disable_parallel_tool_use"] = True
    if shaped is not None:
        fields["tool_choice"] = shaped
    return fields


def thinking_of(
    effort: ReasoningEffort | None, max_tokens: int, exactly: int | None = None
) -> dict[str, Any] | None:
    """The `thinking` field for an effort: a budget from the table (or the one asked for
    `exactly`), kept below max_tokens; "none" (or no room for the least budget) turns thinking
    off; None asks nothing."""
    if effort is None:
        return None
    asked = THINKING_BUDGETS.get(effort, 0) if exactly is None or effort == "none" else exactly
    budget = min(asked, max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        return {"type": "disabled"}
    return {"type": "enabled", "budget_tokens": budget}


def anthropic_sampling(conversation: Conversation, max_tokens: int) -> dict[str, Any]:
    """`thinking` where asked for, and the sampling fields Anthropic takes with it: none of
    temperature and top_k, and top_p only from 0.95, while thinking is on."""
    fields: dict[str, Any] = {}
    thinking = thinking_of(conversation.reasoning, max_tokens, conversation.reasoning_budget)
    if thinking is not None:
        fields["thinking"] = thinking
    thinking_on = thinking is not None and thinking["type"] == "enabled"
    if conversation.temperature is not None and not thinking_on:
        fields["temperature"] = min(conversation.temperature, 1.0)
    top_p = conversation.top_p
    if top_p is not None and (not thinking_on or top_p >= 0.95):
        fields["top_p"] = top_p
    if conversation.top_k is not None and not thinking_on:
        fields["top_k"] = conversation.top_k
    return fields
