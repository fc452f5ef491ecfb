"""The stream's owner, driven directly: every way a stream can end frees its slots and its
replica, closes its upstream response and writes exactly one log line.

The session runs on the test's own loop against the fake upstream on a real loopback socket;
the client is an ASGI `receive` the test controls, iterated as TextStreamingResponse does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from proxy.admission import Admission
from proxy.conversation import Conversation, Message
from proxy.errors import Overloaded, ProxyError, ShuttingDown
from proxy.fake_upstream import reply_text
from proxy.observers import Observers, StreamObserver
from proxy.observers.log import StreamLog
from proxy.record import StreamRecord
from proxy.services import Services
from proxy.session import StreamSession
from proxy.upstream import UpstreamHTTP
from proxy.upstreams import build_upstreams
from proxy.values import Failed
from tests.servers import FakeUpstreamServer, proxy_settings


class RecordingHTTP(UpstreamHTTP):
    """The real upstream client, keeping every response it hands out."""

    def __init__(self, connect_timeout: float) -> None:
        super().__init__(connect_timeout)
        self.responses: list[httpx.Response] = []

    async def send(self, *args: Any, **kwargs: Any) -> httpx.Response:
        response = await super().send(*args, **kwargs)
        self.responses.append(response)
        return response


def responses_of(services: Services) -> list[httpx.Response]:
    assert isinstance(services.http, RecordingHTTP)
    return services.http.responses


def fields_of(line: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = line.__dict__["fields"]
    return fields


def lines_of(stream_log: list[logging.LogRecord], request_id: str) -> list[dict[str, Any]]:
    return [fields_of(line) for line in stream_log if fields_of(line)["request_id"] == request_id]


@dataclass
class Run:
    """What one driven session left behind."""

    session: StreamSession
    text: bytes = b""
    failure: ProxyError | Failed | None = None
    log_lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def record(self) -> StreamRecord:
        return self.session.record


@pytest.fixture
def stream_log() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("proxy.stream")
    handler, previous = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(previous)


class CountingObserver(StreamObserver):
    """How often each request's end was observed (the metrics and any other observer see
    exactly what the log line does)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[str] = []

    def stream_started(self, record: StreamRecord) -> None:
        self.started.append(record.request_id)

    def stream_ended(self, record: StreamRecord) -> None:
        self.ended.append(record.request_id)


def counted(services: Services) -> CountingObserver:
    observers = services.observers
    assert isinstance(observers, Observers)
    counter = observers._observers[-1]
    assert isinstance(counter, CountingObserver)
    return counter


async def start_services(upstream_url: str, **overrides: Any) -> Services:
    # One stream at a time, proxy-wide and per client: a second admission proves a release.
    overrides = {"max_concurrent_streams": 1, "max_streams_per_key": 1, **overrides}
    settings = proxy_settings(upstream_url, **overrides)
    return Services(
        settings,
        build_upstreams(settings),
        RecordingHTTP(settings.timeouts.connect),
        Admission(settings.admission),
        Observers([StreamLog(), CountingObserver()]),
    )


@pytest.fixture
async def services(upstream: FakeUpstreamServer) -> AsyncIterator[Services]:
    # The suite's timeouts (tests/servers.py): short, and long enough for a loaded machine.
    services = await start_services(upstream.url)
    yield services
    await services.http.aclose()


async def run_session(
    services: Services,
    prompt: str,
    stream_log: list[logging.LogRecord],
    *,
    leave_after: int | None = None,
    leave_early: FakeUpstreamServer | None = None,
    shut_down_after: int | None = None,
) -> Run:
    """One session from admission to close, as the route and the response drive it; the
    client leaves after `leave_after` chunks, or before the first once the `leave_early`
    upstream has received the request."""
    client_gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await client_gone.wait()
        return {"type": "http.disconnect"}

    async def leave_once_upstream_has_it(upstream: FakeUpstreamServer) -> None:
        await upstream.wait_received(prompt.split()[0])
        client_gone.set()

    leaving = asyncio.create_task(leave_once_upstream_has_it(leave_early)) if leave_early else None
    session = StreamSession(services, f"req-{prompt.split()[0]}", receive)
    run = Run(session)
    chunks = 0
    try:
        async with session.opening():
            await session.admit("client-a", "127.0.0.1")
            conversation = Conversation(messages=(Message("user", prompt),))
            await session.open(services.default_upstream, conversation, text_only=True)
        async for item in session:
            if isinstance(item, str):
                run.text += item.encode()
                chunks += 1
                if chunks == leave_after:
                    client_gone.set()
                if chunks == shut_down_after:
                    await shut_down(asyncio.current_task())
            elif isinstance(item, Failed):
                run.failure = item
    except ProxyError as exc:
        run.failure = exc
    except asyncio.CancelledError:  # as the stream's dependency does at shutdown
        session.cancelled()
        run.failure = ShuttingDown("the shutdown grace ran out")
        current = asyncio.current_task()
        assert current is not None
        current.uncancel()
    finally:
        await session.aclose()
        if leaving is not None:
            await leaving
    run.log_lines = lines_of(stream_log, session.request_id)
    return run


async def shut_down(task: asyncio.Task[Any] | None) -> None:
    """What uvicorn does to a request still open when the shutdown grace runs out."""
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)


async def assert_everything_released(services: Services, run: Run) -> None:
    assert services.admission.slots.open == 0
    assert counted(services).ended.count(run.session.request_id) == 1  # one metrics end
    assert all(replica.in_flight == 0 for replica in services.default_upstream.balancer.replicas)
    assert responses_of(services), "no upstream request was made"
    assert all(response.is_closed for response in responses_of(services))
    assert len(run.log_lines) == 1
    # The proxy-wide and the per-client slot are both free: the same client is admitted again.
    again = StreamSession(services, "again", _never_receives)
    async with again.opening():
        await again.admit("client-a", "127.0.0.1")
    await again.aclose()


async def _never_receives() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ExitPath:
    directives: str  # the fake upstream's script
    outcome: str
    status: int
    leave_after: int | None = None  # chunks read before the client leaves
    leave_early: bool = False  # the client leaves before the commit point
    proxy_lets_go: bool = True  # the upstream sees the proxy close the connection
    shut_down_after: int | None = None  # chunks read before the shutdown grace runs out


EXIT_PATHS = {
    "completion": ExitPath("@tokens=20", "completed", 200, proxy_lets_go=False),
    "abort after the commit point": ExitPath(
        "@fault=drop-mid @after=3", "upstream_error", 200, proxy_lets_go=False
    ),
    "client disconnect": ExitPath(
        "@tokens=1000 @delay=0.05", "client_disconnected", 200, leave_after=1
    ),
    "client disconnect before the commit point": ExitPath(
        "@fault=hang-before", "client_disconnected", 499, leave_early=True
    ),
    "error before the commit point": ExitPath(
        "@fault=status @status=400", "upstream_error", 502, proxy_lets_go=False
    ),
    "idle timeout": ExitPath("@fault=hang-mid @after=2", "timeout", 200),
    "first-token timeout": ExitPath("@fault=hang-before", "timeout", 504),
    "shutdown after the commit point": ExitPath(
        "@tokens=1000 @delay=0.05", "shutdown", 200, shut_down_after=1
    ),
}


@pytest.mark.parametrize("exit_path", EXIT_PATHS.values(), ids=EXIT_PATHS.keys())
async def test_every_exit_path_frees_everything_and_logs_one_line(
    services: Services,
    upstream: FakeUpstreamServer,
    marker: str,
    stream_log: list[logging.LogRecord],
    exit_path: ExitPath,
) -> None:
    prompt = f"{marker} {exit_path.directives}"
    run = await run_session(
        services,
        prompt,
        stream_log,
        leave_after=exit_path.leave_after,
        leave_early=upstream if exit_path.leave_early else None,
        shut_down_after=exit_path.shut_down_after,
    )
    assert (run.record.outcome, run.record.status) == (exit_path.outcome, exit_path.status)
    assert (run.failure is None) == (exit_path.outcome == "completed")
    assert [(line["outcome"], line["status"]) for line in run.log_lines] == [
        (exit_path.outcome, exit_path.status)
    ]
    if exit_path.proxy_lets_go:
        assert (await upstream.wait_disconnected(marker)).disconnected_at is not None
    await assert_everything_released(services, run)


async def test_a_completed_stream_is_the_upstream_text_and_its_record(
    services: Services, marker: str, stream_log: list[logging.LogRecord]
) -> None:
    run = await run_session(services, f"{marker} @tokens=20", stream_log)
    assert run.text.decode() == reply_text(f"{marker} @tokens=20", 20)
    assert run.record.bytes == len(run.text)
    assert run.record.deltas >= 1
    ttfb, duration = run.record.ttfb, run.record.duration
    assert ttfb is not None
    assert duration is not None
    assert 0 < ttfb <= duration


async def test_an_abort_keeps_the_text_before_it_and_says_why(
    services: Services, marker: str, stream_log: list[logging.LogRecord]
) -> None:
    prompt = f"{marker} @fault=drop-mid @after=3"
    run = await run_session(services, prompt, stream_log)
    assert run.text
    assert reply_text(prompt, 12).encode().startswith(run.text)
    assert run.record.error == "upstream connection dropped mid-stream"


async def test_a_failure_before_the_commit_point_names_its_request(
    services: Services, marker: str, stream_log: list[logging.LogRecord]
) -> None:
    run = await run_session(services, f"{marker} @fault=status @status=400", stream_log)
    assert run.failure is not None
    assert run.failure.request_id == run.session.request_id  # the error response's id
    assert run.log_lines[0]["request_id"] == run.session.request_id


async def test_retried_attempts_each_close_their_upstream(
    services: Services, marker: str, stream_log: list[logging.LogRecord]
) -> None:
    prompt = f"{marker} @fault=status @status=503 @fail_times=2"
    run = await run_session(services, prompt, stream_log)
    assert run.failure is None
    assert run.record.attempts == 3
    assert len(responses_of(services)) == 3
    await assert_everything_released(services, run)


async def test_refused_admission_holds_nothing_and_logs_one_line(
    services: Services, marker: str, stream_log: list[logging.LogRecord]
) -> None:
    holder = StreamSession(services, "holder", _never_receives)
    async with holder.opening():
        await holder.admit("client-b", "127.0.0.1")
    refused = StreamSession(services, f"req-{marker}", _never_receives)
    with pytest.raises(Overloaded):
        async with refused.opening():
            await refused.admit("client-a", "127.0.0.1")
    await holder.aclose()
    lines = lines_of(stream_log, refused.request_id)
    assert [(line["outcome"], line["status"]) for line in lines] == [("rejected", 503)]
    assert services.admission.slots.open == 0


async def test_close_is_idempotent_and_logs_once(
    services: Services, marker: str, stream_log: list[logging.LogRecord]
) -> None:
    session = StreamSession(services, f"req-{marker}", _never_receives)
    await session.aclose()
    await session.aclose()
    assert len(lines_of(stream_log, session.request_id)) == 1


@asynccontextmanager
async def scripted_upstream(body: bytes) -> AsyncIterator[str]:
    """An upstream that answers every request with this body, then closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        writer.write(head + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def test_text_in_a_last_unterminated_line_without_end_marker_aborts(
    marker: str, stream_log: list[logging.LogRecord]
) -> None:
    # The text arrives whole, with no newline after it and no `"done": true`: cut short.
    body = b'{"message":{"role":"assistant","content":"half an answer"},"done":false}'
    async with scripted_upstream(body) as url:
        services = await start_services(url, upstream_dialect="ollama")
        try:
            run = await run_session(services, marker, stream_log)
        finally:
            await services.http.aclose()
    assert run.text == b"half an answer"
    assert run.failure is not None
    assert run.record.outcome == "upstream_error"
    assert run.record.error == "upstream ended the stream without its end marker"
    await assert_everything_released(services, run)
