"""A Conversation in Ollama's `/api/chat` shapes: tools as OpenAI's, an assistant's calls with
their arguments as objects, `tool` results naming their function, images as base64 on their
message, a JSON answer as `format`."""

from __future__ import annotations

from typing import Any

from proxy.conversation import Conversation, Image, Message
from proxy.dialects.anthropic_shapes import call_input
from proxy.dialects.openai_shapes import function_tool


def ollama_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The messages, the system prompt first; a tool result names its function, as Ollama's
    `tool` messages do (`tool_name`)."""
    names = {call.id: call.name for m in conversation.messages for call in m.tool_calls}
    messages = [{"role": "system", "content": conversation.system}] if conversation.system else []
    for message in conversation.messages:
        shaped = ollama_message(message)
        if message.tool_call_id in names:
            shaped["tool_name"] = names[message.tool_call_id]
        messages.append(shaped)
    return messages


def ollama_message(message: Message) -> dict[str, Any]:
    shaped: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.images:
        shaped["images"] = [_base64(image) for image in message.images]
    if message.tool_calls:
        shaped["tool_calls"] = [
            {"function": {"name": call.name, "arguments": call_input(call.arguments)}}
            for call in message.tool_calls
        ]
    return shaped


def _base64(image: Image) -> str:
    inline = image.inline
    assert inline is not None, "links are refused for this dialect (its capabilities)"
    return inline[1]


def ollama_tool_fields(conversation: Conversation) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if conversation.tools and conversation.tool_choice != "none":
        fields["tools"] = [function_tool(tool) for tool in conversation.tools]
    answer = conversation.response_format
    if answer is not None:
        fields["format"] = "json" if answer.type == "json_object" else answer.schema
    return fields
