"""The response for every representation of a stream but the raw-text fast path (issue 13).

It reads a source of items, text (`str`) then one Outcome, and writes them in the chosen
format: the opening at the commit point, each delta as it comes, keep-alives while waiting,
and the end, an explicit `done` or `error` event. A client that leaves is noticed by the
source's watchdog (`watching_client`) and ends the response at once. Like
TextStreamingResponse it owns its source from here on and closes it in one `finally`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.errors import ProxyError
from proxy.formats import Outcome, OutputFormat
from proxy.keepalive import KeepAlive
from proxy.responses import STREAM_HEADERS

Item = str | Outcome


class ItemSource(Protocol):
    """One stream as a framed response reads it: its text, then how it ended."""

    request_id: str

    def __aiter__(self) -> AsyncIterator[Item]: ...

    def watching_client(self) -> AbstractContextManager[None]:
        """A region the client leaving interrupts with ClientDisconnected."""
        ...

    async def aclose(self) -> None: ...


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
                    if closing is None:
                        return  # a format that cannot say "failed" aborts (SPEC §1)
                    await write(closing)
                    break
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except ProxyError:
            return  # the client left: nobody reads the rest
        finally:
            if keepalive is not None:
                keepalive.close()
            await source.aclose()
