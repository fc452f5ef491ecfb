"""A stored stream read back as a response's items: its parts from an offset, followed live,
then its Ending (proxy/formats/head.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from starlette.types import Receive

from proxy.errors import ClientDisconnected, ProxyError, error_body
from proxy.parts import Part
from proxy.resume.base import StoredItem, StoredPart, past_the_end
from proxy.values import Ending, Failed
from proxy.watchdog import Watchdog


class StoredItems:
    """The request's own watchdog notices its client leaving (ClientDisconnected); the
    stream's producer goes on regardless. A producer that was lost is a Failed ending."""

    __slots__ = ("_items", "_watchdog", "request_id")

    def __init__(
        self, items: AsyncGenerator[StoredItem, None], request_id: str, receive: Receive
    ) -> None:
        self._items = items
        self.request_id = request_id
        self._watchdog = Watchdog(receive)

    def __aiter__(self) -> StoredItems:
        return self

    async def __anext__(self) -> Part | Ending:
        watchdog = self._watchdog
        watchdog.waiting_for_upstream()
        try:
            item = await anext(self._items)
        except asyncio.CancelledError as cancelled:
            raise watchdog.explain(cancelled) from None
        except ClientDisconnected:
            raise
        except ProxyError as exc:
            return Failed(error_body(exc, self.request_id))
        finally:
            watchdog.got_upstream()
        # A stored stream's text is read back without waiting: a step through the event loop
        # per item, so a long replay neither holds the loop nor misses its client leaving
        # (StreamResponse skips FastAPI's own step, which the upstream's reads take for it).
        await asyncio.sleep(0)
        return item.part if isinstance(item, StoredPart) else item

    async def aclose(self) -> None:
        self._watchdog.close()
        await self._items.aclose()


async def answer_after(
    items: AsyncGenerator[StoredItem, None], offset: int
) -> AsyncGenerator[StoredItem, None]:
    """A raw-text resume's items: a stored stream read from its start, its first `offset`
    characters of text skipped. A raw-text client counts the answer alone (it never sees the
    reasoning that the stream's offsets count too)."""
    skip = offset
    try:
        async for item in items:
            if isinstance(item, StoredPart):
                text = item.part
                if not isinstance(text, str):
                    continue  # raw text carries the answer alone
                if skip >= len(text):
                    skip -= len(text)
                    continue
                if skip:
                    item, skip = StoredPart(text[skip:], item.end), 0
            elif skip:
                raise past_the_end(offset, offset - skip)
            yield item
    finally:
        await items.aclose()
