"""The benchmark's load generator: many streams on raw sockets, each timed chunk by chunk.

It speaks just enough HTTP/1.1 (one request per connection, a chunked response) to cost
little per chunk, so that what it measures is the server, not itself; it reports its own CPU
time so the bench can show it was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson
import uvloop

from proxy.fake_upstream import reply_text

# An OpenAI chat chunk that carries text (the first, role-only chunk does not).
_CONTENT_EVENT = b'"delta":{"content"'


@dataclass(slots=True, frozen=True)
class Scenario:
    name: str
    streams: int
    tokens: int
    token_delay: float
    # Open connections in waves of this many, so a listen backlog is not overrun.
    ramp_batch: int = 100
    # Runs of the scenario one after another: more samples where one run has few.
    rounds: int = 1


@dataclass(slots=True)
class StreamResult:
    ttfb: float | None = None
    gaps: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass(slots=True)
class RunResult:
    streams: int
    errors: int
    first_error: str | None
    wall: float
    ttfbs: list[float]
    gaps: list[float]
    tokens: int
    cpu: float


def _request(direct: bool, host: str, port: int, prompt: str) -> bytes:
    if direct:
        path = "/v1/chat/completions"
        body = orjson.dumps(
            {"model": "fake", "stream": True, "messages": [{"role": "user", "content": prompt}]}
        )
    else:
        path = "/v1/stream"
        body = orjson.dumps({"prompt": prompt})
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _one_stream(direct: bool, host: str, port: int, prompt: str, tokens: int) -> StreamResult:
    result = StreamResult()
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        result.error = f"connect: {exc}"
        return result
    try:
        writer.write(_request(direct, host, port, prompt))
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            result.error = f"status {status.decode()}"
            return result
        body = bytearray()
        last: float | None = None
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                break
            chunk = (await reader.readexactly(size + 2))[:-2]
            now = time.perf_counter()
            body += chunk
            if direct and _CONTENT_EVENT not in chunk:
                continue
            if last is None:
                result.ttfb = now - start
            else:
                result.gaps.append(now - last)
            last = now
        result.error = _check(direct, bytes(body), prompt, tokens)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()
    return result


def _check(direct: bool, body: bytes, prompt: str, tokens: int) -> str | None:
    """Every stream must be whole and exact, or the speed means nothing."""
    if direct:  # the upstream's own SSE, or the CPU floor's relay of it
        complete = body.endswith(b"data: [DONE]\n\n") and body.count(_CONTENT_EVENT) == tokens
        if not complete:
            return "incomplete upstream stream"
        return None if sse_text(body) == reply_text(prompt, tokens) else "upstream text differs"
    return None if body.decode() == reply_text(prompt, tokens) else "proxy text differs"


def sse_text(body: bytes) -> str:
    """The text of an OpenAI chat completion stream (what the fake upstream sends)."""
    text = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in orjson.loads(line[6:])["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


async def _run(direct: bool, host: str, port: int, scenario: Scenario) -> RunResult:
    cpu_start = time.process_time()
    start = time.perf_counter()
    results: list[StreamResult] = []
    for round_ in range(scenario.rounds):
        tasks: list[asyncio.Task[StreamResult]] = []
        for index in range(scenario.streams):
            # The tricky text: the README's figures were measured with it.
            prompt = f"bench-{scenario.name}-{round_}-{index} @text=tricky "
            prompt += f"@tokens={scenario.tokens} @delay={scenario.token_delay}"
            stream = _one_stream(direct, host, port, prompt, scenario.tokens)
            tasks.append(asyncio.create_task(stream))
            if (index + 1) % scenario.ramp_batch == 0:
                await asyncio.sleep(0.05)  # a wave of connects settles before the next
        results += await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    errors = [r.error for r in results if r.error]
    return RunResult(
        streams=scenario.streams,
        errors=len(errors),
        first_error=errors[0] if errors else None,
        wall=wall,
        ttfbs=[r.ttfb for r in results if r.ttfb is not None],
        gaps=[gap for r in results for gap in r.gaps],
        tokens=scenario.tokens * (len(results) - len(errors)),
        cpu=time.process_time() - cpu_start,
    )


def run_scenario(direct: bool, host: str, port: int, scenario: Scenario) -> RunResult:
    """Entry point for the bench's child process."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return uvloop.run(_run(direct, host, port, scenario))
