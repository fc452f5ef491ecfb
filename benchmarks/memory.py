"""The proxy's memory per open stream (issue 32), measured with the streams held open.

    python -m benchmarks.memory --streams 2000

The fake upstream and the proxy run as processes of their own; the clients run in a third
(a fresh `spawn`), so the proxy's RSS is the proxy's alone. After an unmeasured warm-up the
proxy's RSS is read idle; then every stream is opened (in waves, as the bench does) and the
RSS is read again once each one has had its first text and none has ended yet: the growth
divided by the streams is the figure. Each stream is a few tokens seconds apart, so all of
them are open at once for several seconds, and then runs to its end and is checked exact.

The bench's 10,000-stream row measures something else: the proxy's peak RSS sampled during a
run, less its RSS after the earlier scenarios, divided by all 10,000 streams, although the
proxy never holds them all at once (docs/performance.md, "Memory per open stream").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import uvloop

from benchmarks.bench import _free_port, _raise_fd_limit, _rss_kb, _wait_listening
from benchmarks.loadgen import _request
from proxy.fake_upstream import reply_text

# Issue 32's target, in KB per open stream.
TARGET_KB = 20.0


@dataclass(slots=True, frozen=True)
class Holding:
    """The held streams: `tokens` each, `delay` seconds apart (the first after `delay`)."""

    streams: int
    tokens: int = 3
    delay: float = 6.0
    ramp_batch: int = 100
    warm_up: int = 200


@dataclass(slots=True, frozen=True)
class MemoryFigure:
    streams: int
    idle_rss_kb: int
    open_rss_kb: int
    errors: int
    first_error: str | None

    @property
    def per_stream_kb(self) -> float:
        return max(0, self.open_rss_kb - self.idle_rss_kb) / self.streams


@dataclass(slots=True)
class _Count:
    """How many streams have had their first text, how many have ended, and why not exact."""

    wanted: int
    with_text: int = 0
    ended: int = 0
    errors: list[str] = field(default_factory=list)
    all_open: asyncio.Event = field(default_factory=asyncio.Event)

    def first_text(self) -> None:
        self.with_text += 1
        if self.with_text == self.wanted and self.ended == 0:
            self.all_open.set()

    def end(self, error: str) -> None:
        self.ended += 1
        if error:
            self.errors.append(error)
        if self.ended == self.wanted:
            self.all_open.set()  # also when they never were open all at once


async def _read_body(reader: asyncio.StreamReader, count: _Count) -> str:
    """A chunked body, its first chunk counted as the stream's first text."""
    body = bytearray()
    while size := int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
        if not body:
            count.first_text()
        body += (await reader.readexactly(size + 2))[:-2]
    return body.decode()


async def _one(port: int, prompt: str, tokens: int, count: _Count) -> None:
    error = ""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        count.end(f"connect: {exc}")
        return
    try:
        writer.write(_request(False, "127.0.0.1", port, prompt))
        status = (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1]
        if status != b"200":
            error = f"status {status.decode()}"
        elif await _read_body(reader, count) != reply_text(prompt, tokens):
            error = "proxy text differs"
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()
        count.end(error)


async def _open(
    port: int, streams: int, tokens: int, delay: float, batch: int
) -> tuple[_Count, list[asyncio.Task[None]]]:
    """Opens `streams` streams in waves of `batch`; each runs to its end in its task."""
    count = _Count(streams)
    tasks = []
    for index in range(streams):
        prompt = f"memory-{os.getpid()}-{time.monotonic_ns()}-{index} @text=tricky "
        prompt += f"@tokens={tokens} @delay={delay}"
        tasks.append(asyncio.create_task(_one(port, prompt, tokens, count)))
        if (index + 1) % batch == 0:
            await asyncio.sleep(0.05)  # a wave of connects settles before the next
    return count, tasks


async def _client(port: int, holding: Holding, parent: Connection) -> None:
    """Warm-up, then (once the parent says so) the held streams; each step reported."""
    warm, tasks = await _open(port, holding.warm_up, 2, 0.0, holding.ramp_batch)
    await asyncio.gather(*tasks)
    parent.send(("warm", warm.errors[:1]))
    parent.recv()
    count, tasks = await _open(
        port, holding.streams, holding.tokens, holding.delay, holding.ramp_batch
    )
    await count.all_open.wait()
    parent.send(("open", count.with_text == holding.streams and count.ended == 0))
    await asyncio.gather(*tasks)
    parent.send(("done", count.errors))


def hold_streams(port: int, holding: Holding, parent: Connection) -> None:
    """The client process's entry point."""
    _raise_fd_limit()
    uvloop.run(_client(port, holding, parent))


def measure(port: int, pid: int, holding: Holding) -> MemoryFigure:
    """The proxy at `port` (process `pid`): its RSS idle and with every stream open."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    client = context.Process(target=hold_streams, args=(port, holding, theirs))
    client.start()
    try:
        _, warm_errors = ours.recv()
        idle = _rss_kb(pid)
        ours.send("go")
        _, all_open = ours.recv()
        held = _rss_kb(pid)
        _, errors = ours.recv()
    finally:
        client.join(30)
        if client.is_alive():
            client.kill()
    errors = warm_errors + errors
    if not all_open:
        errors.append("the streams were never all open at once: a longer --delay")
    first = errors[0] if errors else None
    return MemoryFigure(holding.streams, idle, held, len(errors), first)


def _servers(
    upstream_port: int, proxy_port: int, proxy_environment: dict[str, str]
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    upstream = subprocess.Popen(
        [sys.executable, "-m", "proxy", "fake-upstream", "--port", str(upstream_port)],
        stdout=subprocess.DEVNULL,
    )
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PROXY_")},
        "PROXY_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
        "PROXY_PORT": str(proxy_port),
        "PROXY_LOG_LEVEL": "warning",
        "PROXY_MAX_CONCURRENT_STREAMS": "20000",
        **proxy_environment,
    }
    proxy = subprocess.Popen([sys.executable, "-m", "proxy", "serve"], env=environment)
    return upstream, proxy


def run_memory(holding: Holding, proxy_environment: dict[str, str] | None = None) -> MemoryFigure:
    """A fake upstream and a proxy of their own, measured with `holding`'s streams."""
    _raise_fd_limit()
    upstream_port, proxy_port = _free_port(), _free_port()
    upstream, proxy = _servers(upstream_port, proxy_port, proxy_environment or {})
    try:
        _wait_listening(upstream_port, upstream, "fake upstream")
        _wait_listening(proxy_port, proxy, "proxy")
        return measure(proxy_port, proxy.pid, holding)
    finally:
        for process in (proxy, upstream):
            process.terminate()
            process.wait(10)


def line(figure: MemoryFigure) -> str:
    return (
        f"memory per open stream: {figure.per_stream_kb:.1f} KB (target <= {TARGET_KB:.0f} KB), "
        f"{figure.streams} streams held open: proxy RSS {figure.idle_rss_kb / 1024:.1f} -> "
        f"{figure.open_rss_kb / 1024:.1f} MB; errors: {figure.errors}"
        + (f", first: {figure.first_error}" if figure.first_error else "")
    )


FULL_HOLDING = Holding(streams=2000)
QUICK_HOLDING = Holding(streams=40, tokens=2, delay=1.5, warm_up=10)


def bench_memory(quick: bool, output: str, proxy_environment: dict[str, str]) -> int:
    """`make bench`'s memory figure: printed beside its target and written to memory.json."""
    figure = run_memory(QUICK_HOLDING if quick else FULL_HOLDING, proxy_environment)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    report = {**asdict(figure), "per_stream_kb": figure.per_stream_kb, "target_kb": TARGET_KB}
    (folder / "memory.json").write_text(json.dumps(report, indent=2))
    print(line(figure))
    return 1 if figure.errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=3, help="tokens per stream")
    parser.add_argument("--delay", type=float, default=6.0, help="seconds before each token")
    parser.add_argument(
        "--proxy-env", action="append", default=[], metavar="NAME=VALUE", help="(repeatable)"
    )
    args = parser.parse_args(argv)
    environment = dict(item.partition("=")[::2] for item in args.proxy_env)
    figure = run_memory(Holding(args.streams, args.tokens, args.delay), environment)
    print(line(figure))
    return 1 if figure.errors else 0


if __name__ == "__main__":
    sys.exit(main())
