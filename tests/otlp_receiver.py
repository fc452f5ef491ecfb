"""A real OTLP/HTTP trace receiver on a loopback port, as a trace store's collector is.

It runs on its own event loop in a thread (the proxy's exporter posts from the SDK's own
thread, and a proxy's shutdown flush must find it listening while the test waits for that
shutdown). Every POST to /v1/traces is decoded as an ExportTraceServiceRequest with
opentelemetry-proto; tests await the spans they expect, never sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.servers import LoopThread

SERVER, CLIENT = 2, 3  # Span.SpanKind
UNSET, ERROR = 0, 2  # Status.StatusCode


@dataclass(slots=True, frozen=True)
class ReceivedSpan:
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: int
    attributes: dict[str, Any]
    status: int
    status_message: str
    resource: dict[str, Any]
    start_ns: int
    end_ns: int


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(list(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        attributes=_attributes(list(span.attributes)),
                        status=span.status.code,
                        status_message=span.status.message,
                        resource=resource,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                    )
                )
    return spans


_RESPONSE = ExportTraceServiceResponse().SerializeToString()


class _Receiver:
    """Lives on the receiver's loop."""

    def __init__(self) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []
        self.spans: list[ReceivedSpan] = []
        self.paths: list[str] = []
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                async with self._changed:
                    self.paths.append(lines[0].split(" ")[1])
                    self.bodies.append(body)
                    self.spans.extend(decode(body))
                    self._changed.notify_all()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(_RESPONSE), _RESPONSE)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def wait_for(
        self, found: Callable[[list[ReceivedSpan]], bool], timeout: float
    ) -> list[ReceivedSpan]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found(self.spans))
            return list(self.spans)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()


class OTLPReceiver:
    def __init__(self) -> None:
        self._thread = LoopThread()
        self._receiver = _Receiver()
        port = self._thread.run(self._receiver.start())
        self.url = f"http://127.0.0.1:{port}"

    @property
    def connections(self) -> int:
        return self._receiver.connections

    @property
    def bodies(self) -> list[bytes]:
        return list(self._receiver.bodies)

    @property
    def paths(self) -> list[str]:
        return list(self._receiver.paths)

    async def trace_of(self, request_id: str, timeout: float = 10) -> list[ReceivedSpan]:
        """Every span of the trace whose server span has this request id, once that server
        span (which ends last) has arrived."""

        def server(spans: list[ReceivedSpan]) -> ReceivedSpan | None:
            for span in spans:
                if (
                    span.kind == SERVER
                    and span.attributes.get("llm_proxy.request_id") == request_id
                ):
                    return span
            return None

        future = self._thread.submit(
            self._receiver.wait_for(lambda spans: server(spans) is not None, timeout)
        )
        spans = await asyncio.wrap_future(future)
        root = server(spans)
        assert root is not None
        return [span for span in spans if span.trace_id == root.trace_id]

    def close(self) -> None:
        self._thread.run(self._receiver.aclose())
        self._thread.stop()
