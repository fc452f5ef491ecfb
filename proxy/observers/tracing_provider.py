"""The OpenTelemetry SDK's side of tracing: the provider and its OTLP exporter, configured by
the TracingPolicy alone (proxy/tracing_settings.py), and the last flush at shutdown in a
thread of its own. The observer that makes the spans is tracing.py."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.version import __version__ as sdk_version

from proxy.tracing_settings import TracingPolicy

# The longest the last export may hold the shutdown (seconds): spans still queued for a
# backend that does not answer by then are lost, as they would be anyway.
SHUTDOWN_FLUSH = 5.0


def tracer_provider(policy: TracingPolicy) -> TracerProvider:
    """An SDK provider exporting over OTLP/HTTP (protobuf), configured by the policy alone:
    no global provider is set, so several apps can run in one process."""
    resource = Resource(
        {
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": sdk_version,
            **dict(policy.resource_attributes),
            "service.name": policy.service_name,
        }
    )
    provider = TracerProvider(resource=resource, sampler=_sampler(policy))
    exporter = OTLPSpanExporter(
        endpoint=policy.endpoint,
        headers=dict(policy.headers),
        timeout=policy.timeout,
        compression=Compression(policy.compression),
    )
    batch = policy.batch
    processor = BatchSpanProcessor(
        exporter,
        max_queue_size=batch.max_queue_size,
        schedule_delay_millis=batch.schedule_delay_millis,
        max_export_batch_size=batch.max_export_batch_size,
        export_timeout_millis=batch.export_timeout_millis,
    )
    provider.add_span_processor(processor)
    return provider


def _sampler(policy: TracingPolicy) -> Sampler:
    name = policy.sampler
    root: Sampler = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF}.get(
        name.removeprefix("parentbased_"), TraceIdRatioBased(policy.sampler_ratio)
    )
    return ParentBased(root) if name.startswith("parentbased_") else root


async def shut_down(provider: TracerProvider) -> None:
    """Export what is still queued, at the app's shutdown, for at most SHUTDOWN_FLUSH
    seconds: a backend that never answers would hold the exit for the export timeout,
    past the drain's share of the termination grace. Off the event loop, in a daemon
    thread, so the process may end without it."""
    loop = asyncio.get_running_loop()
    flushed = loop.create_future()

    def flush() -> None:
        try:
            provider.shutdown()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_done, flushed)

    threading.Thread(target=flush, name="trace-flush", daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(flushed, SHUTDOWN_FLUSH)


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
