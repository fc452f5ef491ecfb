"""Traces (SPEC §5d): one SERVER span per request, one CLIENT span per upstream attempt.

    POST /v1/stream               SERVER, from the request's arrival to the stream's end
    ├── chat gpt-4o-mini          CLIENT, a failed attempt: error.type "503", status ERROR
    └── chat gpt-4o-mini          CLIENT, the attempt that reached the commit point, until
                                  the stream's end: finish reasons, usage, time to first chunk

The server span is the child of the caller's W3C `traceparent` (and `tracestate`), and each
attempt's request carries a `traceparent` naming that attempt's span, so an upstream that
traces joins the trace. Attributes follow the GenAI semantic conventions (`gen_ai.*`) and,
for HTTP, `server.address`/`server.port` from the replica's public URL (proxy/urls.py: no
credentials) and `http.*`. Never a key, a header, a prompt or a completion.

Spans are live only between events: nothing is done per delta. Built only when tracing is
on (proxy/tracing_settings.py); off, there is no tracer provider, no exporter and no thread.
The SDK's provider, its exporter and the flush at shutdown are tracing_provider.py's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.observers import NO_HEADERS, StreamObserver
from proxy.observers.tracing_provider import shut_down, tracer_provider
from proxy.record import AttemptRecord, AttemptStarted, StreamRecord
from proxy.settings import Settings

INSTRUMENTATION = "llm-stream-proxy"
_PROPAGATOR = TraceContextTextMapPropagator()
# gen_ai.provider.name: the semantic conventions' well-known values where one fits the API.
PROVIDERS = {
    "openai": "openai",
    "openai-completions": "openai",
    "anthropic": "anthropic",
    "ollama": "ollama",
    "tgi": "huggingface.tgi",
}
OPERATIONS = {"openai-completions": "text_completion", "tgi": "text_completion"}
# The request's parameters as each API names them (top level, Ollama's `options`, TGI's
# `parameters`), as gen_ai.request.* attributes.
PARAMETERS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "num_predict": "gen_ai.request.max_tokens",
    "max_new_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "stop": "gen_ai.request.stop_sequences",
    "stop_sequences": "gen_ai.request.stop_sequences",
}
_CLIENT_ERRORS = range(400, 500)  # the client's fault: a SERVER span's status stays unset


@dataclass(slots=True)
class _Live:
    """One stream's open spans."""

    server: Span
    attempt: Span | None = None  # the attempt the stream went on with
    # Attempts under way, by replica: a hedge races the first on another replica (SPEC §5j).
    racing: dict[str, tuple[Span, float]] = field(default_factory=dict)  # and time.monotonic()


class StreamTracer(StreamObserver):
    """The spans of every stream, exported in batches from the SDK's own thread."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(INSTRUMENTATION)
        self._live: dict[int, _Live] = {}  # by id(StreamRecord): one stream, its spans

    def stream_started(self, record: StreamRecord) -> None:
        self._live_spans(record)

    def attempt_started(self, attempt: AttemptStarted) -> Mapping[str, str]:
        live = self._live_spans(attempt.stream)
        operation = OPERATIONS.get(attempt.dialect, "chat")
        span = self._tracer.start_span(
            f"{operation} {attempt.upstream_model}",
            set_span_in_context(live.server, Context()),
            SpanKind.CLIENT,
            _attempt_attributes(attempt, operation),
        )
        live.racing[attempt.replica.url] = (span, time.monotonic())
        headers: dict[str, str] = {}
        _PROPAGATOR.inject(headers, set_span_in_context(span, Context()))
        return headers or NO_HEADERS

    def attempt_ended(self, attempt: AttemptRecord) -> None:
        live = self._live.get(id(attempt.stream))
        racing = live.racing.pop(attempt.replica.url, None) if live is not None else None
        if live is None or racing is None:
            return
        span, began = racing
        if attempt.result == "ok":  # reached the commit point: it lasts as the stream does
            span.set_attribute("gen_ai.response.time_to_first_chunk", time.monotonic() - began)
            live.attempt = span
            return
        if attempt.result == "cancelled":  # the stream's end says why: the client, a shutdown
            live.attempt = span
            return
        error_type: str = attempt.result
        status = getattr(attempt.error, "upstream_status", None)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
            error_type = str(status)
        _fail(span, error_type)
        span.end()

    def stream_ended(self, record: StreamRecord) -> None:
        live = self._live.pop(id(record), None)
        if live is None:  # refused before it went upstream
            live = _Live(self._server_span(record))
        if live.attempt is not None:
            self._end_attempt(live.attempt, record)
        server = live.server
        if server.is_recording():
            server.set_attributes(_server_attributes(record))
            if record.outcome != "completed":
                error_type = _stream_error_type(record)
                server.set_attribute("error.type", error_type)
                if not (record.rejected and record.status in _CLIENT_ERRORS):
                    server.set_status(Status(StatusCode.ERROR))
        server.end()  # the record was just finished: now is its end

    def _end_attempt(self, span: Span, record: StreamRecord) -> None:
        if span.is_recording():
            if record.finish_reason:
                span.set_attribute("gen_ai.response.finish_reasons", (record.finish_reason,))
            usage = record.usage
            if usage.prompt_tokens is not None:
                span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            if usage.completion_tokens is not None:
                span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
            if record.outcome != "completed":
                _fail(span, _stream_error_type(record))
        span.end()

    def _live_spans(self, record: StreamRecord) -> _Live:
        live = self._live.get(id(record))
        if live is None:
            live = self._live[id(record)] = _Live(self._server_span(record))
        return live

    def _server_span(self, record: StreamRecord) -> Span:
        """Started when the request arrived, the child of the caller's trace context."""
        arrival, carrier = record.arrival, {}
        if arrival.traceparent:
            carrier["traceparent"] = arrival.traceparent
            if arrival.tracestate:
                carrier["tracestate"] = arrival.tracestate
        parent = _PROPAGATOR.extract(carrier, Context()) if carrier else Context()
        attributes = {"http.request.method": arrival.method, "http.route": record.route}
        return self._tracer.start_span(
            f"{arrival.method} {record.route}",
            parent,
            SpanKind.SERVER,
            attributes,
            start_time=_wall_ns(record.started),
        )

    async def aclose(self) -> None:
        """Export what is still queued, at the app's shutdown (tracing_provider.py)."""
        await shut_down(self._provider)


def _attempt_attributes(attempt: AttemptStarted, operation: str) -> dict[str, Any]:
    host, _, port = attempt.replica.label.rpartition(":")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": PROVIDERS.get(attempt.dialect, attempt.dialect),
        "gen_ai.request.model": attempt.upstream_model,
        "server.address": host,
        "server.port": int(port),
        "llm_proxy.model": attempt.model,
    }
    body = attempt.body
    for fields in (body, body.get("options"), body.get("parameters")):
        if isinstance(fields, Mapping):
            for name, key in PARAMETERS.items():
                value = fields.get(name)
                if isinstance(value, int | float | str | list) and not isinstance(value, bool):
                    attributes[key] = [str(v) for v in value] if isinstance(value, list) else value
    return attributes


def _server_attributes(record: StreamRecord) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.response.status_code": record.status,
        "llm_proxy.request_id": record.request_id,
        "llm_proxy.outcome": record.outcome or "client_disconnected",
        "llm_proxy.model": record.model,
        "llm_proxy.attempts": record.attempts,
        "llm_proxy.resumable": record.resumable,
    }
    if record.client is not None:  # the client key's name or short id, never the key
        attributes["llm_proxy.client"] = record.client
    if record.output_format is not None:
        attributes["llm_proxy.output_format"] = record.output_format
    # A thinking model's time to its first part and to its answer (seconds), and how much it
    # thought: counts only, never its text.
    if record.first_part is not None:
        attributes["llm_proxy.time_to_first_part"] = record.first_part
    if record.first_text is not None:
        attributes["llm_proxy.time_to_first_text"] = record.first_text
    if record.reasoning_deltas:
        attributes["llm_proxy.reasoning_deltas"] = record.reasoning_deltas
    if record.usage.reasoning_tokens is not None:
        attributes["gen_ai.usage.reasoning.output_tokens"] = record.usage.reasoning_tokens
    return attributes


def _stream_error_type(record: StreamRecord) -> str:
    if record.outcome == "client_disconnected":
        return "client_disconnected"
    return record.error_type or record.outcome or "client_disconnected"


def _fail(span: Span, error_type: str) -> None:
    """ERROR with no description: an upstream's error text may quote the request (the log
    line, under the same request id, has the message)."""
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR))


def _wall_ns(monotonic: float) -> int:
    """A time.monotonic() instant as the epoch nanoseconds spans are stamped with."""
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)


def create_tracer(settings: Settings) -> StreamTracer | None:
    """The app's tracer, or None when tracing is off (no OTLP endpoint set)."""
    policy = settings.tracing
    return None if policy is None else StreamTracer(tracer_provider(policy))
