"""A Conversation in OpenAI's Chat Completions shapes: its messages (images as `image_url`
parts, an assistant's `tool_calls`, `tool` results) and its tools, tool choice and response
format, as a client of OpenAI would have sent them."""

from __future__ import annotations

from typing import Any

from proxy.conversation import Conversation, ForcedTool, Image, Message, Tool, ToolCall


def openai_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """Role/content messages with the system prompt first, as chat APIs take them."""
    messages: list[dict[str, Any]] = []
    if conversation.system:
        messages.append({"role": "system", "content": conversation.system})
    messages.extend(openai_message(message) for message in conversation.messages)
    return messages


def openai_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    shaped: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.images:
        text = [{"type": "text", "text": message.content}] if message.content else []
        shaped["content"] = text + [image_url_part(image) for image in message.images]
    if message.tool_calls:
        shaped["content"] = message.content or None
        shaped["tool_calls"] = [openai_tool_call(call) for call in message.tool_calls]
    return shaped


def image_url_part(image: Image) -> dict[str, Any]:
    url: dict[str, str] = {"url": image.url}
    if image.detail is not None:
        url["detail"] = image.detail
    return {"type": "image_url", "image_url": url}


def openai_tool_call(call: ToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}


def function_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def openai_tool_fields(conversation: Conversation) -> dict[str, Any]:
    """tools, tool_choice, parallel_tool_calls and response_format, where asked for."""
    fields: dict[str, Any] = {}
    if conversation.tools:
        fields["tools"] = [function_tool(tool) for tool in conversation.tools]
    choice = conversation.tool_choice
    if isinstance(choice, ForcedTool):
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None:
        fields["tool_choice"] = choice
    if conversation.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = conversation.parallel_tool_calls
    answer = conversation.response_format
    if answer is not None and answer.type == "json_object":
        fields["response_format"] = {"type": "json_object"}
    elif answer is not None:
        schema: dict[str, Any] = {"name": answer.name or "response", "schema": answer.schema}
        if answer.strict is not None:
            schema["strict"] = answer.strict
        if answer.description is not None:
            schema["description"] = answer.description
        fields["response_format"] = {"type": "json_schema", "json_schema": schema}
    return fields
