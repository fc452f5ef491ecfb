"""The response for every representation of a stream but the raw-text fast path (issue 13).

It reads a source of items, text (`str`) then one Outcome, and writes them in the chosen
format: the opening at the commit point, each delta as it comes, keep-alives while waiting,
and the end, an explicit `done` or `error` event. A client that leaves is noticed by the
source's watchdog (`watching_client`) and ends the response at once. Like
TextStreamingResponse it owns its source from here on and closes it in one `finally`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractContextManager
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.errors import ClientDisconnected, ProxyError, error_body
from proxy.formats import Failed, Outcome, OutputFormat
from proxy.keepalive import KeepAlive
from proxy.responses import ABORT_LINGER, STREAM_HEADERS
from proxy.resume import StoredItem, StoredText
from proxy.session import StreamSession
from proxy.watchdog import Watchdog

Item = str | Outcome


class ItemSource(Protocol):
    """One stream as a framed response reads it: its text, then how it ended."""

    request_id: str

    def __aiter__(self) -> AsyncIterator[Item]: ...

    def watching_client(self) -> AbstractContextManager[None]:
        """A region the client leaving interrupts with ClientDisconnected."""
        ...

    async def aclose(self) -> None: ...

    def cancelled(self) -> None:
        """The request's task was cancelled (the shutdown grace ran out): note why."""
        ...


class FramedStreamingResponse(Response):
    def __init__(
        self,
        source: ItemSource,
        output: OutputFormat,
        keepalive: float,
        *,
        offset: int = 0,
        message_id: str = "",
    ) -> None:
        self.source = source
        self.output = output
        self.keepalive = keepalive
        self.offset = offset
        self.message_id = message_id
        self.status_code = 200
        self.background = None
        self.init_headers(
            {
                **STREAM_HEADERS,
                "Content-Type": output.content_type,
                "X-Request-ID": source.request_id,
                **output.headers,
            }
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = self.source
        encoder = self.output.encoder(self.offset, self.message_id)
        keepalive: KeepAlive | None = None
        failed = False
        try:
            with source.watching_client():
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                keepalive = KeepAlive(send, encoder.keepalive, self.keepalive)
                write = keepalive.send
                await write(encoder.opening())
                async for item in source:
                    if isinstance(item, str):
                        await write(encoder.delta(item))
                        # A bursty source never waits: a turn of the loop per item lets a
                        # client that left be noticed (SPEC §7).
                        await asyncio.sleep(0)
                        continue
                    closing = encoder.end(item)
                    failed = closing is None  # a format that cannot say "failed" aborts
                    if closing is not None:
                        await write(closing)
                    break
            if not failed:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except ProxyError:
            return  # the client left: nobody reads the rest
        except asyncio.CancelledError:
            source.cancelled()
            raise
        finally:
            if keepalive is not None:
                keepalive.close()
            await source.aclose()
        if failed:
            # As TextStreamingResponse does: a browser's fetch keeps the text queued before
            # the abort only if it has a moment to hand it to the page.
            await asyncio.sleep(ABORT_LINGER)


class SessionItems:
    """A live session as items: its text, then Done, or Failed for a failure after the
    commit point (the session has logged it)."""

    __slots__ = ("_ended", "_session", "request_id")

    def __init__(self, session: StreamSession) -> None:
        self._session = session
        self._ended = False
        self.request_id = session.request_id

    def __aiter__(self) -> SessionItems:
        return self

    async def __anext__(self) -> Item:
        if self._ended:
            raise StopAsyncIteration
        try:
            return (await anext(self._session)).decode()
        except StopAsyncIteration:
            self._ended = True
            return self._session.ending()
        except ClientDisconnected:
            raise
        except ProxyError as exc:
            self._ended = True
            return Failed(error_body(exc, self.request_id))

    def watching_client(self) -> AbstractContextManager[None]:
        return self._session.watching_client()

    async def aclose(self) -> None:
        await self._session.aclose()

    def cancelled(self) -> None:
        self._session.cancelled()


class StoredItems:
    """A stored stream, replayed from an offset and followed live, as items; the request's
    own watchdog notices its client leaving (the producer goes on regardless)."""

    __slots__ = ("_items", "_watchdog", "request_id")

    def __init__(
        self, items: AsyncGenerator[StoredItem, None], request_id: str, receive: Receive
    ) -> None:
        self._items = items
        self.request_id = request_id
        self._watchdog = Watchdog(receive)

    def __aiter__(self) -> StoredItems:
        return self

    async def __anext__(self) -> Item:
        try:
            item = await anext(self._items)
        except ClientDisconnected:
            raise
        except ProxyError as exc:  # the producer was lost: say so, as a failure
            return Failed(error_body(exc, self.request_id))
        return item.text if isinstance(item, StoredText) else item

    def watching_client(self) -> AbstractContextManager[None]:
        return self._watchdog.guarding()

    async def aclose(self) -> None:
        self._watchdog.close()
        await self._items.aclose()

    def cancelled(self) -> None:
        pass  # its producer is not this request's: it ends on its own, or at shutdown
