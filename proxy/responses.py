"""The responses the proxy writes: one for every representation of a stream, and the JSON
error of SPEC §2 (in OpenAI's shape on the OpenAI-compatible route, SPEC §5c)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from types import AsyncGeneratorType

from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.errors import ErrorShape, ProxyError, error_body
from proxy.formats import Head, Item
from proxy.formats.encoders import Encoder
from proxy.keepalive import KeepAlive
from proxy.parts import Part, Reasoning, ToolCallDelta
from proxy.values import Done, Failed

# Seconds between the last text of a failed stream and the abort; the stream's upstream is
# already closed by then.
ABORT_LINGER = 0.05

_END = {"type": "http.response.body", "body": b"", "more_body": False}

# The server's own `send`, put in the scope by the app (proxy/app.py ProxyApp) before any
# middleware wraps it. Starlette's error and exception middlewares wrap `send` in a coroutine
# each (three awaits per chunk) only to see whether the response has started: the response's
# start and its end still go through the wrapped `send`, the deltas between them straight to
# the server.
SERVER_SEND = "proxy.server_send"


class StreamResponse(StreamingResponse):
    """A stream's items (proxy/formats/head.py) written in its Head's format: the head at the
    commit point, each part as it comes (by the encoder's method for its kind), keep-alives
    while waiting, then the ending.

    Unlike StreamingResponse it never ends a failed stream cleanly where the format cannot
    say "failed" (raw text): it returns without the terminating chunk and the server closes
    the connection, so the client sees a transport error rather than a truncated body that
    looks complete (SPEC §1). A client that left (ClientDisconnected from the items) ends it
    at once. Whoever opened the stream closes it (the route's dependency); the items are
    closed here on every path.
    """

    media_type = "text/plain"  # the default representation; the Head names the real one

    def __init__(
        self,
        content: AsyncGenerator[Item, None],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.items = _unwrapped(content)
        self.status_code = status_code
        self.background = background
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        items = self.items
        keepalive: KeepAlive | None = None
        failed = False
        try:
            head = await anext(items)
            assert isinstance(head, Head), "a stream begins with its Head"
            encoder = head.encoder()
            headers = self._start_headers(head)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            keepalive = KeepAlive(scope.get(SERVER_SEND, send), encoder.keepalive, head.keepalive)
            write = keepalive.send
            await write(encoder.opening())
            async for item in items:
                if type(item) is str:  # most parts are text: first, and no lookup
                    await write(encoder.delta(item))
                    continue
                assert not isinstance(item, Head | str), "a stream has one Head, first"
                if not isinstance(item, Done | Failed):
                    data = encode_part(encoder, item)
                    if data:  # a format that does not carry a kind writes nothing for it
                        await write(data)
                    continue
                closing = encoder.end(item)
                failed = closing is None  # a format that cannot say "failed" aborts
                if closing is not None:
                    await write(closing)
                break
            if not failed:
                await send(_END)
        except ProxyError:
            return  # the client left: nobody reads the rest
        finally:
            if keepalive is not None:
                keepalive.close()
            await items.aclose()
        if failed:
            # A browser's fetch body that errors throws away the text it has queued but not
            # yet handed to the page (the Streams spec's error() empties the queue): a moment
            # between the last write and the abort lets a reading page take that text first.
            await asyncio.sleep(ABORT_LINGER)

    def _start_headers(self, head: Head) -> list[tuple[bytes, bytes]]:
        # The route's own headers (FastAPI's), but the Head says what the body is.
        extra = [header for header in self.raw_headers if header[0] != b"content-type"]
        return head.raw_headers() + extra


def encode_part(encoder: Encoder, part: Part) -> bytes:
    """A part other than text, by the encoder's method for its kind."""
    if isinstance(part, Reasoning):
        return encoder.reasoning(part.text)
    if isinstance(part, str):
        return encoder.delta(part)
    if isinstance(part, ToolCallDelta):
        return encoder.tool_call(part)
    return encoder.signature(part)


def _unwrapped(content: AsyncGenerator[Item, None]) -> AsyncGenerator[Item, None]:
    """The path operation's own generator, from inside FastAPI's wrapper around it.

    FastAPI wraps a `yield` path operation's generator in one that awaits `anyio.sleep(0)`
    after every item (FastAPI's `_async_stream_raw`, for fastapi#14680: cancellation must
    land even when the producer never waits). The proxy's items come from upstream reads
    that already step through the event loop when they did not wait (proxy/upstream/
    connection.py ResponseStream), so the wrapper's generator step and task step per delta
    are skipped. The wrapper, never started, holds nothing; any other generator is kept.
    """
    if not isinstance(content, AsyncGeneratorType) or content.ag_frame is None:
        return content
    if content.ag_code.co_name != "_async_stream_raw":
        return content
    inner = content.ag_frame.f_locals.get("async_gen")
    return inner if isinstance(inner, AsyncGeneratorType) else content


def error_response(
    exc: ProxyError, request_id: str, shape: ErrorShape = error_body
) -> JSONResponse:
    """The error as JSON, in the shape of the route's API (the proxy's own by default)."""
    headers = {"X-Request-ID": request_id, **dict(exc.extra_headers), **exc.headers()}
    return JSONResponse(shape(exc, request_id), status_code=exc.status_code, headers=headers)
