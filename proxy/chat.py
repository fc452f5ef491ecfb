"""The request `useChat` sends through the AI SDK's DefaultChatTransport (issue 13).

`{"id": chat id, "messages": [UI messages], "trigger": "submit-message" | "regenerate-message",
"messageId": ...}` plus whatever the app put in the transport's `body` (`model`, `system`,
`max_tokens`, `temperature`, ...), validated as on POST /v1/stream. The SDK trims the
messages itself before a regeneration, so the conversation is always the messages as sent.
"""

from __future__ import annotations

import os

from pydantic import Field, field_validator

from proxy.api import StreamRequest

# The same characters as an X-Request-ID: the chat id names a stored stream and a URL path.
CHAT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class ChatRequest(StreamRequest):
    id: str = Field(pattern=CHAT_ID_PATTERN)
    trigger: str | None = None
    messageId: str | None = Field(default=None, max_length=128)  # the SDK's name

    @field_validator("id")
    @classmethod
    def _not_a_path_step(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError("must not be . or ..")
        return value

    def response_message_id(self) -> str:
        """The id of the assistant message this request produces.

        A regeneration replaces the message the client named; anything else is a new one.
        """
        if self.trigger == "regenerate-message" and self.messageId:
            return self.messageId
        return "msg-" + os.urandom(12).hex()
