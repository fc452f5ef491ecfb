"""Stored streams in this process's memory: resume works against the process that produced."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import AsyncGenerator, Callable, Mapping

from proxy.errors import StreamLost
from proxy.parts import Part, characters
from proxy.resume.base import (
    StoredItem,
    StoredPart,
    not_found,
    part_from,
    past_the_end,
    too_large,
)
from proxy.values import Ending


class MemoryStream:
    """One stored stream: its writer and what readers find."""

    __slots__ = (
        "_bytes",
        "_changed",
        "_ends",
        "_items",
        "_store",
        "attributes",
        "ending",
        "expires_at",
        "length",
        "owner",
    )

    def __init__(self, store: MemoryResumeStore, owner: str, attributes: Mapping[str, str]):
        self._store = store
        self.owner = owner
        self.attributes = dict(attributes)
        self._items: list[StoredPart] = []
        self._ends: list[int] = []
        self._bytes = 0
        self.length = 0
        self.ending: Ending | None = None
        self._changed = asyncio.Event()
        self.expires_at = store.clock() + store.ttl

    @property
    def active(self) -> bool:
        return self.ending is None

    def append(self, part: Part) -> None:
        if self.ending is not None:
            return
        text = characters(part)
        self._bytes += len(text.encode())
        if self._bytes > self._store.max_bytes:
            request_id = self.attributes.get("request_id", "")
            self._ended(too_large(request_id, self._store.max_bytes))
            return
        self.length += len(text)
        self._items.append(StoredPart(part, self.length))
        self._ends.append(self.length)
        self._wake()

    async def end(self, ending: Ending) -> None:
        if self.ending is None:
            self._ended(ending)

    def _ended(self, ending: Ending) -> None:
        self.ending = ending
        self._wake()

    def _wake(self) -> None:
        self.expires_at = self._store.clock() + self._store.ttl
        self._changed.set()  # wakes every reader waiting now; later ones wait anew
        self._changed.clear()

    async def follow(self, offset: int) -> AsyncGenerator[StoredItem, None]:
        if self.ending is not None and offset > self.length:
            raise past_the_end(offset, self.length)
        index = bisect.bisect_right(self._ends, offset)
        while True:
            while index < len(self._items):
                yield part_from(self._items[index], offset)
                index += 1
            if self.ending is not None:
                yield self.ending
                return
            follow_timeout = self._store.follow_timeout
            if follow_timeout is None:  # a producer in this process always writes its end
                await self._changed.wait()
                continue
            try:
                async with asyncio.timeout(follow_timeout):
                    await self._changed.wait()
            except TimeoutError:
                raise StreamLost("the stream being resumed stopped without its end") from None


class MemoryResumeStore:
    def __init__(
        self,
        ttl: float,
        max_bytes: int,
        follow_timeout: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.follow_timeout = follow_timeout
        self.clock = clock
        self._streams: dict[str, MemoryStream] = {}
        self._next_purge = 0.0

    async def start(
        self, stream_id: str, owner: str, attributes: Mapping[str, str]
    ) -> MemoryStream:
        self._purge()
        stream = MemoryStream(self, owner, attributes)
        self._streams[stream_id] = stream
        return stream

    async def find(self, stream_id: str, owner: str) -> MemoryStream:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.expires_at <= self.clock():
            del self._streams[stream_id]
            stream = None
        if stream is None or stream.owner != owner:
            raise not_found(stream_id)
        return stream

    def __len__(self) -> int:
        self._purge(force=True)
        return len(self._streams)

    def _purge(self, force: bool = False) -> None:
        """Forget expired streams, at most once a second: memory stays bounded by the TTL."""
        now = self.clock()
        if now < self._next_purge and not force:
            return
        self._next_purge = now + 1.0
        expired = [key for key, stream in self._streams.items() if stream.expires_at <= now]
        for key in expired:
            del self._streams[key]

    async def aclose(self) -> None:
        self._streams.clear()
