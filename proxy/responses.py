"""The streaming response: plain text, written delta by delta, aborted on failure."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.background import BackgroundTask
from starlette.responses import ContentStream, StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.errors import ProxyError
from proxy.watchdog import Watchdog

STREAM_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    # nginx buffers proxied responses unless told not to.
    "X-Accel-Buffering": "no",
    # Browsers hold back ~1 KiB of text/plain for MIME sniffing without it.
    "X-Content-Type-Options": "nosniff",
}


class TextStreamingResponse(StreamingResponse):
    """`text/plain; charset=utf-8`, each chunk sent as it comes.

    Unlike Starlette's StreamingResponse it never ends a failed stream cleanly: when the body
    iterator raises a ProxyError after the status line, it returns without the terminating
    chunk, and the server closes the connection, so the client sees a transport error rather
    than a truncated body that looks complete (SPEC §1). The relay has logged the failure.
    It always watches for the client leaving, whatever ASGI spec version the server speaks,
    so an abandoned stream stops reading its upstream at once: with the request's Watchdog
    when the path operation made one (`request.state.watchdog`), else with its own.
    """

    media_type = "text/plain"

    def __init__(
        self,
        content: ContentStream,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(
            content, status_code, {**STREAM_HEADERS, **(headers or {})}, media_type, background
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watchdog: Watchdog | None = scope.get("state", {}).get("watchdog")
        own = watchdog is None
        if watchdog is None:
            watchdog = Watchdog(receive)
        try:
            await self._send_body(send, watchdog)
        finally:
            if own:
                watchdog.close()

    async def _send_body(self, send: Send, watchdog: Watchdog) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        try:
            with watchdog.guarding():
                async for chunk in self.body_iterator:
                    if isinstance(chunk, str):
                        chunk = chunk.encode()
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except ProxyError:
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class DropIncompleteResponseLog(logging.Filter):
    """uvicorn reports our deliberate aborts as an error; the relay already logged them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


def drop_incomplete_response_log() -> None:
    """Install DropIncompleteResponseLog on uvicorn's error logger, once."""
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DropIncompleteResponseLog) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(DropIncompleteResponseLog())
