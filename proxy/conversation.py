"""What the client asked for, in the proxy's own words, independent of any upstream API."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from proxy.settings import ReasoningEffort

Role = Literal["system", "user", "assistant"]


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
    reasoning: ReasoningEffort | None = None  # None: the upstream's default

    def reasoning_or(self, default: ReasoningEffort | None) -> Conversation:
        """This conversation, asking for the model's default effort when it asks for none."""
        if self.reasoning is not None or default is None:
            return self
        return dataclasses.replace(self, reasoning=default)

    def as_prompt(self) -> str:
        """One plain-text prompt, for completion-style APIs that take no message list."""
        if len(self.messages) == 1 and self.system is None:
            return self.messages[0].content
        parts = [self.system] if self.system else []
        parts.extend(f"{message.role}: {message.content}" for message in self.messages)
        return "\n\n".join(parts) + "\n\nassistant:"
