"""Keep-alive comments on a framed stream that is waiting for text (issue 13).

Proxies and load balancers close a response that sends nothing for a while (nginx's
`proxy_read_timeout` is 60 s); an upstream may think longer than that between two deltas.
While the stream sends nothing for `interval` seconds, a ping goes out (`: ping` for SSE).

As in the Watchdog, the hot path only writes down the time: one timer per stream, re-armed
lazily, sends a ping from a task of its own while the stream's task is blocked on its
upstream. The stream's own writes go through `send`, which waits for a ping in flight, so
two writes never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Send


class KeepAlive:
    __slots__ = ("_busy", "_interval", "_last", "_loop", "_ping", "_pinging", "_send", "_timer")

    def __init__(self, send: Send, ping: bytes, interval: float) -> None:
        self._send = send
        self._ping = ping
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._busy = False
        self._pinging: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        if ping:  # a format without keep-alives (raw text) only gets the write discipline
            self._timer = self._loop.call_at(self._last + interval, self._check)

    async def send(self, body: bytes) -> None:
        """Write part of the body (nothing for empty bytes), after any ping in flight."""
        if not body:
            return
        pinging = self._pinging
        if pinging is not None and not pinging.done():
            await asyncio.wait([pinging])  # not cancelled by our own cancellation
        self._busy = True
        try:
            await self._send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            self._busy = False
            self._last = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        due = self._last + self._interval
        if now + 0.001 >= due:  # timers may fire a clock tick early
            if not self._busy and (self._pinging is None or self._pinging.done()):
                self._pinging = self._loop.create_task(self._send_ping())
            self._last = now
            due = now + self._interval
        self._timer = self._loop.call_at(due, self._check)

    async def _send_ping(self) -> None:
        # A client that left is the stream's to notice; a ping has nothing to report.
        with contextlib.suppress(Exception):
            await self._send({"type": "http.response.body", "body": self._ping, "more_body": True})

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pinging is not None:
            self._pinging.cancel()
