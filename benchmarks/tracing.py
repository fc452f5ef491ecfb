"""What tracing costs (issue 19): `python -m benchmarks.tracing`.

Two proxies in processes of their own on one fake upstream: one with tracing off (no OTLP
endpoint), one exporting every span over OTLP/HTTP to a sink in this process (so the
collector's own cost is not the proxy's). Rounds alternate between them; each round runs
the same streams at once and reads the proxy's CPU time from /proc (every thread, the SDK's
exporter included) once the sink holds every span of the round: two per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from benchmarks.formats import FORMATS, _check, _cpu_seconds, _free_port, _one_stream, _server

RAW_TEXT = FORMATS[0]
_RESPONSE = ExportTraceServiceResponse().SerializeToString()


class SpanSink:
    """An OTLP/HTTP receiver that counts spans, on its own loop in a thread."""

    def __init__(self) -> None:
        self.spans = 0
        self._counted = threading.Condition()
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        start = asyncio.start_server(self._serve, "127.0.0.1", self.port)
        asyncio.run_coroutine_threadsafe(start, self._loop).result(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = ExportTraceServiceRequest.FromString(await reader.readexactly(length))
                spans = sum(
                    len(scope.spans)
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                )
                with self._counted:
                    self.spans += spans
                    self._counted.notify_all()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(_RESPONSE), _RESPONSE)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def wait_for(self, spans: int, timeout: float = 30) -> None:
        with self._counted:
            if not self._counted.wait_for(lambda: self.spans >= spans, timeout):
                raise RuntimeError(f"the sink got {self.spans} spans of {spans}")


@dataclass(slots=True, frozen=True)
class Round:
    cpu_us_per_stream: float
    ttfb_p50_ms: float


async def _round(port: int, pid: int, streams: int, tokens: int, sink: SpanSink | None) -> Round:
    expected = (sink.spans + 2 * streams) if sink is not None else 0
    prompts = [f"bench-trace-{i}-{time.monotonic_ns()} @tokens={tokens}" for i in range(streams)]
    cpu_before = _cpu_seconds(pid)
    results = await asyncio.gather(
        *(_one_stream(RAW_TEXT, port, prompt, f"s{i}") for i, prompt in enumerate(prompts))
    )
    if sink is not None:
        await asyncio.to_thread(sink.wait_for, expected)
    cpu = _cpu_seconds(pid) - cpu_before
    for prompt, (_, body, _) in zip(prompts, results, strict=True):
        _check(RAW_TEXT, body, prompt, tokens)
    ttfb = statistics.median(ttfb for ttfb, _, _ in results)
    return Round(cpu / streams * 1e6, ttfb * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams per round")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per stream")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per proxy, alternating")
    args = parser.parse_args()
    sink = SpanSink()
    upstream_port, off_port, on_port = _free_port(), _free_port(), _free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    common = {"PROXY_UPSTREAM_URL": upstream, "PROXY_LOG_LEVEL": "warning"}
    traced = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    rounds: dict[str, list[Round]] = {"off": [], "on": []}
    fake = ["fake-upstream", "--port", str(upstream_port), "--token-delay", "0"]
    with (
        _server(fake, upstream_port, {}),
        _server(["serve"], off_port, {**common, "PROXY_PORT": str(off_port)}) as off_pid,
        _server(["serve"], on_port, {**common, **traced, "PROXY_PORT": str(on_port)}) as on_pid,
    ):
        for port, pid in ((off_port, off_pid), (on_port, on_pid)):  # warm-up, unmeasured
            asyncio.run(_round(port, pid, 16, args.tokens, sink if pid == on_pid else None))
        for _ in range(args.rounds):
            rounds["off"].append(
                asyncio.run(_round(off_port, off_pid, args.streams, args.tokens, None))
            )
            rounds["on"].append(
                asyncio.run(_round(on_port, on_pid, args.streams, args.tokens, sink))
            )
    print(
        f"{args.streams} concurrent streams x {args.tokens} tokens, no delay; "
        f"{args.rounds} alternating rounds each, median\n"
    )
    print("| tracing | proxy CPU per stream | TTFB p50 |")
    print("| --- | --- | --- |")
    off = statistics.median(r.cpu_us_per_stream for r in rounds["off"])
    for name, runs in rounds.items():
        cpu = statistics.median(r.cpu_us_per_stream for r in runs)
        ttfb = statistics.median(r.ttfb_p50_ms for r in runs)
        # /proc counts CPU in clock ticks (10 ms): a tiny run's may measure as 0.
        ratio = f" ({cpu / off:.2f}x)" if off else ""
        print(f"| {name} | {cpu:.0f} µs{ratio} | {ttfb:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
