"""The shape every upstream API adapter has.

An adapter maps a Conversation to the upstream's request, and the upstream's byte stream to
typed parts (proxy/parts.py). It knows nothing of timeouts, retries, the commit point or our
own HTTP statuses: those live once, in the core (attempt, relay, session).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from proxy.conversation import Capabilities, Conversation
from proxy.errors import UpstreamProtocolError
from proxy.parts import Part
from proxy.settings import ModelSpec
from proxy.values import Usage

# The parts a read completed (consecutive ones of a kind joined), and the failure that ended
# the stream there (None while it goes on). Both can come from one read: the parts before an
# in-band error are still parts.
Parsed = tuple[list[Part], UpstreamProtocolError | None]


@dataclass(slots=True, frozen=True)
class UpstreamRequest:
    path: str
    headers: dict[str, str]
    json: dict[str, Any]


class StreamParser(Protocol):
    """Turns one upstream response body into parts, one TCP read at a time."""

    @property
    def complete(self) -> bool:
        """The dialect's end marker has arrived: the text is whole."""
        ...

    @property
    def usage(self) -> Usage:
        """The token usage the stream reported so far (never text, never a failure)."""
        ...

    @property
    def finish_reason(self) -> str | None:
        """Why the upstream stopped, in its own word, once it said (issue 13's `done`)."""
        ...

    def feed(self, chunk: bytes) -> Parsed:
        """The parts of every event completed by this chunk (none: []), and the failure
        (an in-band error, an unreadable event) that cut it short, if any: after a failure
        the parser is done."""
        ...

    def close(self) -> Parsed:
        """The body ended: the parts of a last unterminated event, if the format allows one."""
        ...


class Dialect(Protocol):
    name: str
    capabilities: Capabilities  # what it carries beyond text (SPEC §5h)

    def build_request(self, model: ModelSpec, conversation: Conversation) -> UpstreamRequest: ...

    def parser(self, max_event_bytes: int) -> StreamParser:
        """A parser for one response; an event or line over max_event_bytes fails it."""
        ...

    def error_message(self, body: bytes) -> str:
        """The human-readable message inside an upstream error body."""
        ...
