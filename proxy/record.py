"""What one stream did, from request to end: the record behind its one log line."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from proxy.dialects.base import TokenUsage
from proxy.errors import (
    ClientDisconnected,
    ProxyError,
    ShuttingDown,
    UpstreamError,
    UpstreamTimeout,
)

logger = logging.getLogger("proxy.stream")

Outcome = Literal[
    "completed", "client_disconnected", "upstream_error", "timeout", "rejected", "shutdown"
]


@dataclass(slots=True)
class StreamRecord:
    """Filled in as the stream goes; final once `finish` has run (then `outcome` and
    `ended` are set). Times are `time.monotonic()` seconds."""

    request_id: str
    model: str = "-"
    client: str | None = None
    started: float = field(default_factory=time.monotonic)
    upstream: str | None = None
    attempts: int = 0
    status: int = 200
    outcome: Outcome | None = None
    error: str | None = None
    first_delta_at: float | None = None
    ended: float | None = None
    deltas: int = 0
    bytes: int = 0
    # As the upstream reported them (None: it did not say).
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def ttfb(self) -> float | None:
        """Seconds from the request to the commit point (None if it was never reached)."""
        return None if self.first_delta_at is None else self.first_delta_at - self.started

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def count_tokens(self, usage: TokenUsage) -> None:
        """What the upstream reported using (the parser reads it beside the text)."""
        self.prompt_tokens, self.completion_tokens = usage.prompt, usage.completion

    def failed(self, exc: ProxyError) -> None:
        """The stream ends with this failure, unless its end was already written down."""
        if self.outcome is None:
            self.outcome = outcome_of(exc)
            self.error = exc.message

    def finish(self) -> None:
        """The stream is over: stamp the end, then write the one log line (SPEC §1)."""
        self.ended = time.monotonic()
        if self.outcome is None:  # nothing said otherwise: nobody read to the end
            self.outcome = "client_disconnected"
        level = logging.INFO if self.outcome in _QUIET else logging.WARNING
        if logger.isEnabledFor(level):
            logger.log(level, "stream", extra={"fields": self._fields()})

    def _fields(self) -> dict[str, object]:
        ttfb, duration = self.ttfb, self.duration
        fields: dict[str, object] = {
            "request_id": self.request_id,
            "model": self.model,
            "client": self.client,
            "upstream": self.upstream,
            "status": self.status,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "ttfb_ms": _ms(ttfb) if ttfb else None,
            "duration_ms": _ms(duration or 0.0),
            "deltas": self.deltas,
            "bytes": self.bytes,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
        if self.error:
            fields["error"] = self.error
        return fields


_QUIET = frozenset({"completed", "client_disconnected"})


def outcome_of(exc: ProxyError) -> Outcome:
    if isinstance(exc, ClientDisconnected):
        return "client_disconnected"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, ShuttingDown):
        return "shutdown"
    if isinstance(exc, UpstreamError):
        return "upstream_error"
    return "rejected"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
