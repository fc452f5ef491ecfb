"""What each output format costs against raw text (issue 13): `python benchmarks/formats.py`.

The fake upstream and the proxy run in processes of their own, as deployed; this process is
the client. For each representation of the same stream (raw text, SSE, NDJSON, the AI SDK UI
message stream on /v1/chat, and SSE of a resumable stream) it runs the same load and reports
the proxy's own CPU time per delta (read from /proc, so the client's cost is not in it),
throughput, and time to first byte at a model's pace. Every stream is checked whole and
exact after it is timed, or its speed would mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import orjson

from proxy.fake_upstream import reply_text

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True, frozen=True)
class Format:
    name: str
    path: str
    accept: str
    decode: Callable[[bytes], str]  # the text a client reads out of the body
    store: str | None = None  # resumable, with its text kept in "memory" or "redis"


def _sse_text(body: bytes) -> str:
    text = []
    for block in body.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: {"):
                data = orjson.loads(line[6:])
                text.append(data.get("text") or data.get("delta") or "")
    return "".join(text)


def _ndjson_text(body: bytes) -> str:
    lines = (orjson.loads(line) for line in body.split(b"\n") if line)
    return "".join(line.get("text", "") for line in lines)


FORMATS = (
    Format("raw text", "/v1/stream", "text/plain", bytes.decode),
    Format("SSE", "/v1/stream", "text/event-stream", _sse_text),
    Format("NDJSON", "/v1/stream", "application/x-ndjson", _ndjson_text),
    Format("AI SDK UI stream (/v1/chat)", "/v1/chat", "*/*", _sse_text),
    Format("SSE, resumable (memory)", "/v1/stream", "text/event-stream", _sse_text, "memory"),
    Format("SSE, resumable (Redis)", "/v1/stream", "text/event-stream", _sse_text, "redis"),
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("a benchmark server exited at start-up")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@contextmanager
def _server(arguments: list[str], port: int, environment: dict[str, str]) -> Iterator[int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", *arguments],
        env={**clean, **environment},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, process)
        yield process.pid
    finally:
        process.terminate()
        process.wait(10)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _request(fmt: Format, port: int, prompt: str, stream_id: str) -> bytes:
    if fmt.path == "/v1/chat":
        message = {"id": "u", "role": "user", "parts": [{"type": "text", "text": prompt}]}
        body = orjson.dumps({"id": stream_id, "messages": [message], "trigger": "submit-message"})
    else:
        body = orjson.dumps({"prompt": prompt})
    request_id = f"X-Request-ID: {stream_id}\r\n" if fmt.store else ""
    head = (
        f"POST {fmt.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAccept: {fmt.accept}\r\n{request_id}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _one_stream(
    fmt: Format, port: int, prompt: str, stream_id: str
) -> tuple[float, bytes, int]:
    """Time to the first body chunk, the whole body, and the number of chunks."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_request(fmt, port, prompt, stream_id))
        head = await reader.readuntil(b"\r\n\r\n")
        if head.split(b" ", 2)[1] != b"200":
            raise RuntimeError(f"{fmt.name}: {head.splitlines()[0].decode()}")
        body = bytearray()
        ttfb = 0.0
        chunks = 0
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                break
            body += (await reader.readexactly(size + 2))[:-2]
            chunks += 1
            if not ttfb:
                ttfb = time.perf_counter() - start
        return ttfb, bytes(body), chunks
    finally:
        writer.close()


@dataclass(slots=True, frozen=True)
class Measured:
    tokens_per_s: float
    cpu_us_per_token: float
    ttfb_p50_ms: float
    bytes_per_token: float
    chunks_per_token: float


async def _measure(
    fmt: Format, port: int, pid: int, streams: int, tokens: int, delay: float
) -> Measured:
    # At a model's pace, one stream at a time: time to first byte.
    ttfbs = []
    for index in range(10):
        prompt = f"bench-ttfb-{fmt.name}-{index} @tokens=5 @delay=0.02"
        ttfb, body, _ = await _one_stream(fmt, port, prompt, f"t{index}-{time.monotonic_ns()}")
        _check(fmt, body, prompt, 5)
        ttfbs.append(ttfb)
    # `streams` at once, each token its own delta (paced just enough not to be batched into
    # one read): the proxy's CPU per delta.
    prompts = [f"bench-{fmt.name}-{i} @tokens={tokens} @delay={delay}" for i in range(streams)]
    cpu_before, started = _cpu_seconds(pid), time.perf_counter()
    results = await asyncio.gather(
        *(_one_stream(fmt, port, p, f"s{i}-{time.monotonic_ns()}") for i, p in enumerate(prompts))
    )
    wall, cpu = time.perf_counter() - started, _cpu_seconds(pid) - cpu_before
    for prompt, (_, body, _) in zip(prompts, results, strict=True):
        _check(fmt, body, prompt, tokens)
    total = streams * tokens
    return Measured(
        tokens_per_s=total / wall,
        cpu_us_per_token=cpu / total * 1e6,
        ttfb_p50_ms=statistics.median(ttfbs) * 1000,
        bytes_per_token=sum(len(body) for _, body, _ in results) / total,
        chunks_per_token=sum(chunks for _, _, chunks in results) / total,
    )


def _check(fmt: Format, body: bytes, prompt: str, tokens: int) -> None:
    if fmt.decode(body) != reply_text(prompt, tokens):
        raise RuntimeError(f"{fmt.name}: the text differs from the upstream's")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=64, help="concurrent streams")
    parser.add_argument("--tokens", type=int, default=500, help="tokens per stream")
    parser.add_argument("--delay", type=float, default=0.002, help="seconds per token")
    parser.add_argument("--rounds", type=int, default=3, help="runs per format (best kept)")
    parser.add_argument("--redis-url", help="a Redis for the resumable-in-Redis row (else none)")
    args = parser.parse_args()
    upstream_port = _free_port()
    rows: dict[str, Measured] = {}
    with _server(
        ["fake-upstream", "--port", str(upstream_port), "--token-delay", "0"], upstream_port, {}
    ):
        for store in (None, "memory", "redis"):
            if store == "redis" and not args.redis_url:
                continue
            port = _free_port()
            environment = {
                "PROXY_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
                "PROXY_PORT": str(port),
                "PROXY_LOG_LEVEL": "warning",
                "PROXY_RESUME": "true" if store else "false",
                **({"PROXY_REDIS_URL": args.redis_url} if store == "redis" else {}),
            }
            with _server(["serve"], port, environment) as pid:
                for fmt in FORMATS:
                    if fmt.store != store:
                        continue
                    runs = [
                        asyncio.run(_measure(fmt, port, pid, args.streams, args.tokens, args.delay))
                        for _ in range(args.rounds)
                    ]
                    rows[fmt.name] = min(runs, key=lambda run: run.cpu_us_per_token)
    raw = rows["raw text"]
    print(
        f"{args.streams} concurrent streams x {args.tokens} tokens, {args.delay * 1000:g} ms per "
        f"token; best of {args.rounds} runs by proxy CPU\n"
    )
    print("| format | proxy CPU per token | vs raw text | chunks/token | bytes/token | TTFB p50 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        # /proc counts CPU in clock ticks (10 ms): a tiny run's raw text can measure as 0.
        ratio = (
            f"{row.cpu_us_per_token / raw.cpu_us_per_token:.2f}x" if raw.cpu_us_per_token else "-"
        )
        print(
            f"| {name} | {row.cpu_us_per_token:.1f} µs | {ratio} | "
            f"{row.chunks_per_token:.2f} | {row.bytes_per_token:.1f} | {row.ttfb_p50_ms:.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
