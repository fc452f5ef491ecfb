"""One request's watchdog: it interrupts the request when its client leaves or its upstream
goes quiet for too long.

A task group and a timeout scope per stream, and a timeout per upstream read, cost more CPU
than relaying the text. Here each stream has one watcher task (blocked on `receive()` until
the client disconnects) and at most one timer, re-armed lazily: the hot path only writes
down the time. The watchdog interrupts by cancelling the request's task, and only inside
the regions that say how to turn that into a ProxyError:

- `guarding()`: the client leaving raises ClientDisconnected here.
- `waiting_for_upstream()` ... `got_upstream()`: around reads of the upstream, where silence
  longer than the idle timeout, or the end of the total time, raises UpstreamTimeout, and
  the client leaving raises ClientDisconnected (the caller turns the cancellation into
  either with `explain`). A client that left elsewhere (while its response was being
  written) is raised by the next `waiting_for_upstream()`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import Receive

from proxy.errors import ClientDisconnected, ProxyError, UpstreamTimeout


class Watchdog:
    __slots__ = (
        "_cancelled",
        "_deadline",
        "_guarding",
        "_idle_due",
        "_idle_timeout",
        "_loop",
        "_task",
        "_timer",
        "_waiting",
        "_watcher",
        "fired",
    )

    def __init__(self, receive: Receive) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self.fired: ProxyError | None = None
        self._guarding = False
        self._waiting = False
        self._cancelled = False
        self._idle_timeout = math.inf
        self._idle_due = math.inf
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._watcher = self._loop.create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        # Only once the request body has been read: after that, receive() returns nothing
        # but the disconnect.
        while (await receive())["type"] != "http.disconnect":
            pass
        self._fire(ClientDisconnected("client disconnected"), self._guarding or self._waiting)

    def _fire(self, reason: ProxyError, interrupt: bool) -> None:
        if self.fired is not None:
            return
        self.fired = reason
        if interrupt and not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    def claim(self) -> ProxyError | None:
        """The failure behind a CancelledError, if the watchdog caused it (None if not)."""
        if not self._cancelled:
            return None
        self._cancelled = False
        self._task.uncancel()
        return self.fired

    def explain(self, cancelled: asyncio.CancelledError) -> BaseException:
        """What to raise for a cancellation: the watchdog's failure if it caused it, else
        the cancellation itself."""
        failure = self.claim()
        return cancelled if failure is None else failure

    @contextmanager
    def guarding(self) -> Iterator[None]:
        """A region the client leaving interrupts with ClientDisconnected."""
        if self.fired is not None:
            raise self.fired
        self._guarding = True
        try:
            yield
        except asyncio.CancelledError as cancelled:
            raise self.explain(cancelled) from None
        finally:
            self._guarding = False

    def forget_client(self) -> None:
        """From now on the client leaving changes nothing: a resumable stream outlives it
        (issue 13). Upstream deadlines still hold."""
        self._watcher.cancel()
        if isinstance(self.fired, ClientDisconnected):
            self.fired = None

    def limit_upstream(self, idle_timeout: float, deadline: float) -> None:
        """From now on, reads of the upstream are bounded by these."""
        self._idle_timeout = idle_timeout
        self._deadline = deadline

    def waiting_for_upstream(self) -> None:
        """A read of the upstream begins: silence from here on counts as idle."""
        if self.fired is not None:
            raise self.fired
        self._waiting = True
        self._idle_due = self._loop.time() + self._idle_timeout
        if self._timer is None:
            due = min(self._idle_due, self._deadline)
            if due != math.inf:  # no limits (yet): only the client is watched
                self._timer = self._loop.call_at(due, self._check)

    def got_upstream(self) -> None:
        self._waiting = False

    def _check(self) -> None:
        self._timer = None
        now = self._loop.time() + 0.001  # timers may fire a clock tick early
        if not self._waiting:
            return  # the next read re-arms the timer
        if now >= self._deadline:
            self._fire(UpstreamTimeout("stream exceeded the total timeout"), True)
        elif now >= self._idle_due:
            message = f"no text from upstream for {self._idle_timeout:g} s"
            self._fire(UpstreamTimeout(message), True)
        else:
            self._timer = self._loop.call_at(min(self._idle_due, self._deadline), self._check)

    def close(self) -> None:
        self._watcher.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
