"""The proxy with the timeline's stamps (issue 32): only the bench runs this; `proxy/` carries
none of it.

    python -m benchmarks.timeline_hooks      # the proxy's settings from the environment

Before the app is built, a few methods of uvicorn, the proxy and its transport are wrapped
so that each notes `time.perf_counter_ns()` (CLOCK_MONOTONIC: the bench's client reads the
same clock) the first time a request passes it, under the name of the step it ends. GET
/_timeline answers every finished request's stamps and forgets them; `?steps=1` makes every
task created from then on asyncio's pure-Python Task, whose steps are stamped too (each
`__step` is one turn of a task through the event loop), and `?steps=0` goes back to the C
tasks (the Python ones are slower: the step pass is for counting, not timing).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

# The request under way (one at a time: the bench's requests are sequential): its first
# stamp of each step, in nanoseconds; and the task steps seen during it, in order.
_current: dict[str, int] = {}
_steps: list[tuple[str, int]] = []
_finished: list[dict[str, Any]] = []
FIRST_TEXT = "first text written"


def stamp(step: str) -> None:
    if step not in _current:
        _current[step] = time.perf_counter_ns()


def _begin() -> None:
    _current.clear()
    _steps.clear()


def _finish() -> None:
    _finished.append({"stamps": dict(_current), "steps": list(_steps)})
    _begin()


def wrap(owner: Any, name: str, enter: str | None = None, leave: str | None = None) -> None:
    """`owner.name` stamps `enter` before it runs and `leave` after (a coroutine function
    stays one, so FastAPI and asyncio see what they saw)."""
    original = getattr(owner, name)
    if inspect.iscoroutinefunction(original):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if enter:
                stamp(enter)
            result = await original(*args, **kwargs)
            if leave:
                stamp(leave)
            return result

    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            if enter:
                stamp(enter)
            result = original(*args, **kwargs)
            if leave:
                stamp(leave)
            return result

    setattr(owner, name, functools.wraps(original)(wrapper))


def _hook_uvicorn() -> None:
    received = HttpToolsProtocol.data_received

    def data_received(self: HttpToolsProtocol, data: bytes) -> None:
        if not getattr(self, "_timeline_seen", False):  # a new connection: a new request
            self._timeline_seen = True  # type: ignore[attr-defined]
            _begin()
            stamp("request read")
        received(self, data)
        stamp("request parsed")

    HttpToolsProtocol.data_received = data_received  # type: ignore[method-assign]
    send = RequestResponseCycle.send

    async def cycle_send(self: RequestResponseCycle, message: Any) -> None:
        await send(self, message)
        if message["type"] == "http.response.start":
            stamp("head sent")
        elif message.get("body") and "request read" in _current:  # not the rest of the text
            stamp(FIRST_TEXT)
            _finish()

    RequestResponseCycle.send = cycle_send  # type: ignore[method-assign]


def _hook_proxy() -> None:
    """The steps of issue 32's timeline, each named by where it ends."""
    import proxy.opening as opening
    from proxy.app import ProxyApp
    from proxy.dialects.common import SSEPartsParser
    from proxy.dialects.openai import OpenAIChat
    from proxy.observers import Observers
    from proxy.relay import Attempts, Relay
    from proxy.responses import StreamResponse
    from proxy.session import StreamSession
    from proxy.upstream import pool
    from proxy.upstream.client import UpstreamHTTP
    from proxy.upstream.connection import Connection
    from proxy.upstream.pool import UpstreamTransport
    from proxy.upstreams import Upstream

    wrap(ProxyApp, "__call__", enter="app called")
    wrap(opening.StreamOpener, "_start", enter="dependency called", leave="stream opened")
    wrap(opening, "identify_client", leave="client identified")
    wrap(opening, "acceptable", leave="format chosen")
    wrap(StreamSession, "admit", leave="admitted")
    wrap(opening, "read_body", leave="body read and validated")
    wrap(opening, "check_prompt_length", leave="prompt length checked")
    wrap(opening, "choose_upstream", leave="model chosen")
    wrap(Upstream, "refuse_beyond", leave="head and conversation built")
    wrap(StreamSession, "open", enter="session opening", leave="commit point")
    wrap(Observers, "stream_started", leave="stream observed")
    wrap(OpenAIChat, "build_request", leave="upstream request built")
    wrap(Relay, "commit", enter="relay started")
    wrap(Attempts, "start", leave="replica chosen")
    wrap(Observers, "attempt_started", leave="attempt observed")
    wrap(UpstreamHTTP, "send", enter="send called", leave="upstream head read")
    wrap(pool, "request_bytes", leave="request serialised")
    wrap(UpstreamTransport, "_idle_connection", leave="connection chosen")
    wrap(UpstreamTransport, "_connect", leave="connected")
    wrap(Connection, "_send_request", leave="upstream request written")
    wrap(Connection, "data_received", enter="upstream bytes arrived")
    feed = SSEPartsParser.feed

    def first_part(self: SSEPartsParser, chunk: bytes) -> Any:
        parsed = feed(self, chunk)
        if parsed[0]:
            stamp("first part parsed")
        return parsed

    SSEPartsParser.feed = first_part  # type: ignore[method-assign]
    wrap(StreamResponse, "__call__", enter="response called")


def _hook_task_steps(loop: asyncio.AbstractEventLoop, on: bool) -> None:
    """Pure-Python tasks from now on (`on`), each of whose steps is stamped; or C tasks."""
    if not on:
        loop.set_task_factory(None)
        return
    py_task: Any = asyncio.tasks._PyTask  # type: ignore[attr-defined]
    if not getattr(py_task, "_timeline_hooked", False):
        original = py_task._Task__step

        def step(self: Any, *args: Any) -> None:
            coroutine = self.get_coro()
            name = getattr(coroutine, "__qualname__", type(coroutine).__name__)
            _steps.append((name, time.perf_counter_ns()))
            original(self, *args)

        py_task._Task__step = step
        py_task._timeline_hooked = True

    def factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kw: Any) -> Any:
        return py_task(coro, loop=loop, **kw)

    loop.set_task_factory(factory)  # type: ignore[arg-type]


class TimelineApp:
    """The proxy's app, and GET /_timeline beside it."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Any]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/_timeline":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if query in (b"steps=1", b"steps=0"):
            _hook_task_steps(asyncio.get_running_loop(), query == b"steps=1")
        body = orjson.dumps([r for r in _finished if FIRST_TEXT in r["stamps"]])
        _finished.clear()
        _begin()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    from proxy.__main__ import server_options
    from proxy.app import create_app
    from proxy.logs import configure_logging
    from proxy.settings import load_settings

    _hook_uvicorn()
    _hook_proxy()
    settings = load_settings()
    app = create_app(settings)
    configure_logging(settings)
    uvicorn.run(TimelineApp(app), **server_options(settings))


if __name__ == "__main__":
    main()
