"""One request as the fake received it: what the server answers from, and tests inspect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class FakeRequest:
    """One request as the fake received it, and what became of it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any  # the parsed body, or None
    prompt: str
    received_at: float  # time.monotonic() when the request was complete
    # Taken in connection_lost itself: tests prove the proxy lets go of an upstream in 100 ms.
    disconnected_at: float | None = None
    finished_at: float | None = None  # when the fake itself ended (or aborted) the response
