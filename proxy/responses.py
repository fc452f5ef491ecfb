"""The streaming response: plain text, written delta by delta, aborted on failure."""

from __future__ import annotations

import asyncio
import logging

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.errors import ClientDisconnected, ProxyError
from proxy.session import StreamSession

STREAM_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    # nginx buffers proxied responses unless told not to.
    "X-Accel-Buffering": "no",
    # Browsers hold back ~1 KiB of text/plain for MIME sniffing without it.
    "X-Content-Type-Options": "nosniff",
}


# Seconds between the last text of a failed stream and the abort; the session (upstream, slot,
# log line) is already closed by then.
ABORT_LINGER = 0.05


class TextStreamingResponse(Response):
    """`text/plain; charset=utf-8`: an open StreamSession's text, each chunk sent as it comes.

    It owns the session from here on, as Starlette's StreamingResponse owns its iterator: one
    `finally` closes it, on every path. Unlike StreamingResponse it never ends a failed
    stream cleanly: when the session fails after the status line, it returns without the
    terminating chunk and the server closes the connection, so the client sees a transport
    error rather than a truncated body that looks complete (SPEC §1); the session has logged
    the failure. The session's watchdog, not a listener task of its own, notices the client
    leaving, whatever ASGI spec version the server speaks.
    """

    media_type = "text/plain"

    def __init__(self, session: StreamSession) -> None:
        self.session = session
        self.status_code = 200
        self.background = None
        self.init_headers({**STREAM_HEADERS, "X-Request-ID": session.request_id})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = self.session
        failed = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            with session.watching_client():
                async for chunk in session:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    # A bursty upstream's reads never wait: a turn of the loop per chunk
                    # lets a client that left be noticed (SPEC §7).
                    await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except ClientDisconnected:
            return
        except ProxyError:
            failed = True
        except asyncio.CancelledError:
            session.cancelled()
            raise
        finally:
            await session.aclose()
        if failed:
            # A browser's fetch body that errors throws away the text it has queued but not
            # yet handed to the page (the Streams spec's error() empties the queue): a moment
            # between the last write and the abort lets a reading page take that text first.
            await asyncio.sleep(ABORT_LINGER)


class DropIncompleteResponseLog(logging.Filter):
    """uvicorn reports our deliberate aborts as an error; the session already logged them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


def drop_incomplete_response_log() -> None:
    """Install DropIncompleteResponseLog on uvicorn's error logger, once."""
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DropIncompleteResponseLog) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(DropIncompleteResponseLog())
