"""What the client asked for, in the proxy's own words, independent of any upstream API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]
# How hard a thinking model should think (OpenAI's `reasoning_effort` values); each dialect
# maps it to its own request (proxy/dialects/).
Effort = Literal["none", "minimal", "low", "medium", "high"]


@dataclass(slots=True, frozen=True)
class Message:
    role: Role
    content: str


@dataclass(slots=True, frozen=True)
class Conversation:
    """A validated request: messages in order, the system prompt apart, sampling options."""

    messages: tuple[Message, ...]
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    reasoning: Effort | None = None  # None: the upstream's default

    def as_prompt(self) -> str:
        """One plain-text prompt, for completion-style APIs that take no message list."""
        if len(self.messages) == 1 and self.system is None:
            return self.messages[0].content
        parts = [self.system] if self.system else []
        parts.extend(f"{message.role}: {message.content}" for message in self.messages)
        return "\n\n".join(parts) + "\n\nassistant:"
