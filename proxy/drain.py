"""Graceful drain: how a request still open when the shutdown grace runs out ends.

On SIGTERM uvicorn stops accepting connections, lets open requests finish for up to
`timeout_graceful_shutdown` seconds (PROXY_SHUTDOWN_GRACE, passed by `python -m proxy serve`),
then cancels the tasks of those still open. The stream session writes its log line with the
outcome `shutdown` (the watchdog claims its own interruptions, so any other cancellation that
reaches a stream is the server's). What is left is this: the cancellation must not escape to
uvicorn, which would log a traceback per stream. A stream past the commit point then ends as
an abort (uvicorn closes the connection without the chunked terminator, never a clean end,
SPEC §1); one that never started answers 503 `shutting_down` (a stream's session does that
itself, with its request id; this covers every other route).
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.errors import ShuttingDown
from proxy.ids import request_id_in
from proxy.responses import error_response


class AbortOnShutdown:
    """Pure ASGI (nothing on the streaming path is buffered or re-framed): turns the server's
    cancellation of a request into an aborted response, or a 503 before the response began."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            shutdown = ShuttingDown("the proxy is shutting down")
            response = error_response(shutdown, request_id_in(scope))
            # Tracking whether the response began would cost a wrapper around every chunk's
            # send; instead the 503 is offered, and a server whose response already began
            # refuses the second start before writing anything.
            with contextlib.suppress(RuntimeError):
                await response(scope, receive, send)
