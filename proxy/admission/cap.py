"""The proxy's stream cap (PROXY_MAX_CONCURRENT_STREAMS): refuse at once rather than queue."""

from __future__ import annotations

from proxy.errors import Overloaded


class StreamSlots:
    """Streams open in this process, under its cap; 503 past it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def acquire(self) -> None:
        if self.open >= self.limit:
            raise Overloaded("the proxy is at its stream limit; retry shortly", retry_after=1)
        self.open += 1

    def release(self) -> None:
        self.open -= 1
