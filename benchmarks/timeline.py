"""The timeline of one request through the proxy at one stream (issue 32).

    python -m benchmarks.timeline [--requests 100] [--output DIR]

Four processes on one fake upstream: the proxy with the timeline's stamps
(benchmarks/timeline_hooks.py), the plain proxy, and the relaying floor
(benchmarks/relay_floor.py); the client is this process, one request at a time on blocking
sockets, each a 5-token answer with no delay between tokens (`@delay=0`), checked exact.
Each round asks the fake directly, then the plain proxy, the relaying floor and the stamped
proxy, one after another.

- **The timeline**: for each step, the median over the stamped requests of the time from the
  stamp before it; the first stamp is uvicorn handing the request's bytes to its protocol
  (its last byte, as the client sends the request in one write), the last the first text
  byte handed to the socket. The fake upstream's own time is measured directly (the client's
  request to its first content event), so the wait for it can be told from the proxy's work.
- **Task steps**: then a few requests with asyncio's pure-Python tasks, whose every step
  through the event loop is stamped: how many turns the request's tasks take before its first
  text byte, and which.
- **Time to first byte** at one stream, from the client: direct, the proxy and the relaying
  floor, in the same rounds (the plain proxy's: the stamps cost a few microseconds).

The stamps are wall-clock: on a machine shared with other work, judge changes by the CPU
figures (benchmarks/cpu.py), which count the proxy's own CPU time.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmarks.bench import _free_port, _wait_listening
from benchmarks.cpu import _fastapi_floor, _proxy_environment
from benchmarks.timeline_hooks import FIRST_TEXT
from proxy.fake_upstream import reply_text

TOKENS = 5
_HOOKED = "benchmarks.timeline_hooks"
# The stamps in the order a request passes them; a row is the time from the stamp before it.
STEPS = (
    ("request read", "uvicorn has the request's bytes"),
    ("request parsed", "httptools parses the head and body; the ASGI task is created"),
    ("app called", "the ASGI task's first step, into the app"),
    ("dependency called", "middleware, routing, Request, dependency resolution, the session"),
    ("client identified", "the client key (open proxy: none)"),
    ("format chosen", "Accept negotiated"),
    ("admitted", "admission: the slot under the caps"),
    ("body read and validated", "the body read and validated by pydantic"),
    ("prompt length checked", "the prompt's length"),
    ("model chosen", "the model's upstream"),
    ("head and conversation built", "the Head, the conversation, Capabilities checked"),
    ("session opening", "into the session's open"),
    ("stream observed", "the record's observers told the stream started"),
    ("upstream request built", "the watchdog's task; the dialect's request body"),
    ("relay started", "the relay"),
    ("replica chosen", "the attempts, the deadline, the balancer's replica"),
    ("attempt observed", "the observers told of the attempt (trace headers)"),
    ("send called", "into the transport"),
    ("request serialised", "httpx.Request built, its head and body as bytes"),
    ("connection chosen", "a kept-alive connection, checked silent"),
    ("connected", "a new connection (none in the steady state)"),
    ("upstream request written", "the request written"),
    ("upstream bytes arrived", "waiting for the upstream (its own time below)"),
    ("upstream head read", "the head parsed; the task woken"),
    ("first part parsed", "the first event's SSE and JSON parsed (and any wait for it)"),
    ("commit point", "back out through the attempt and the relay"),
    ("stream opened", "the session open; the stream's Head"),
    ("response called", "the dependency yields; the path operation run, the response built"),
    ("head sent", "the response head written"),
    (FIRST_TEXT, "the path operation's first part, encoded and written"),
)  # fmt: skip


@dataclass(slots=True)
class Timeline:
    rows: list[tuple[str, str, float]]  # step, what it covers, median µs
    total_us: float  # request read to first text written, median
    fake_us: float  # the fake upstream's own time to its first content event, median
    ttfb_ms: dict[str, float]  # client-side time to first text byte, median
    steps: list[str] = field(default_factory=list)  # the task steps before the first byte
    requests: int = 0


def _fetch(port: int, request: bytes, first_text: bytes) -> tuple[int, int, bytes]:
    """Send `request`; the send's and the first text's perf_counter_ns, and the body
    (de-chunked). The first text: the first chunk containing `first_text`."""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = time.perf_counter_ns()
        connection.sendall(request)
        buffer, body, first = b"", b"", 0
        while b"\r\n\r\n" not in buffer:
            buffer += connection.recv(65536)
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"answered {head[:40]!r}")
        while True:
            while b"\r\n" not in buffer:
                buffer += _more(connection)
            size_line, _, buffer = buffer.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buffer) < size + 2:
                buffer += _more(connection)
            chunk, buffer = buffer[:size], buffer[size + 2 :]
            if not first and first_text in chunk:
                first = time.perf_counter_ns()
            if size == 0:
                return sent, first, body
            body += chunk


def _more(connection: socket.socket) -> bytes:
    data = connection.recv(65536)
    if not data:
        raise RuntimeError("the connection closed mid-response")
    return data


def _ask(port: int, direct: bool, index: int) -> float:
    """One request, checked exact; its time to first text, in µs."""
    prompt = f"timeline-{index} @text=tricky @tokens={TOKENS} @delay=0"
    if direct:
        path = "/v1/chat/completions"
        body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": prompt}]}
        marker = b'"delta":{"content"'
    else:
        path, body, marker = "/v1/stream", {"prompt": prompt}, b""
    content = orjson.dumps(body)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n"
    ).encode() + content
    sent, first, answer = _fetch(port, request, marker)
    expected = reply_text(prompt, TOKENS)
    if not direct and answer.decode() != expected:
        raise RuntimeError(f"inexact answer on port {port}: {answer[:80]!r}")
    return (first - sent) / 1000


def _stamped(port: int, query: str = "") -> list[dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port)) as connection:
        request = f"GET /_timeline{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        connection.sendall(request.encode())
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    records: list[dict[str, Any]] = orjson.loads(data.partition(b"\r\n\r\n")[2])
    return records


class Servers:
    """The fake upstream, the stamped proxy, the plain proxy and the relaying floor."""

    def __init__(self) -> None:
        fake_port, self.stamped, self.proxy = _free_port(), _free_port(), _free_port()
        self.fake, self.relaying = fake_port, _free_port()
        url = f"http://127.0.0.1:{fake_port}"
        command = [sys.executable, "-m", "proxy", "fake-upstream", "--port", str(fake_port)]
        self.processes = [
            ("fake upstream", fake_port, subprocess.Popen(command, stdout=subprocess.DEVNULL)),
            ("stamped proxy", self.stamped, self._proxy(url, self.stamped, _HOOKED)),
            ("proxy", self.proxy, self._proxy(url, self.proxy, "proxy", "serve")),
            ("relaying floor", self.relaying, _fastapi_floor(
                self.relaying, "benchmarks.relay_floor:app", f"127.0.0.1:{fake_port}")),
        ]  # fmt: skip
        try:
            for name, port, process in self.processes:
                _wait_listening(port, process, name)
        except RuntimeError:
            self.close()
            raise

    @staticmethod
    def _proxy(url: str, port: int, *module: str) -> subprocess.Popen[bytes]:
        environment = _proxy_environment(url, port)
        return subprocess.Popen([sys.executable, "-m", *module], env=environment)

    def close(self) -> None:
        for _, _, process in self.processes:
            process.terminate()
        for _, _, process in self.processes:
            process.wait(10)


def _rows(records: list[dict[str, Any]]) -> tuple[list[tuple[str, str, float]], float]:
    """Each step's median time from the stamp before it (the latest one the request passed:
    a kept-alive connection is not connected), and the median of the whole."""
    gaps: dict[str, list[float]] = {step: [] for step, _ in STEPS}
    for record in records:
        stamps, previous = record["stamps"], None
        for step, _ in STEPS:
            if step in stamps:
                if previous is not None:
                    gaps[step].append((stamps[step] - previous) / 1000)
                previous = stamps[step]
    rows = [(step, covers, statistics.median(gaps[step])) for step, covers in STEPS if gaps[step]]
    total = [(r["stamps"][FIRST_TEXT] - r["stamps"][STEPS[0][0]]) / 1000 for r in records]
    return rows, statistics.median(total)


def _task_steps(records: list[dict[str, Any]]) -> list[str]:
    """The task steps between the request's bytes and its first text (the last request's:
    every request takes the same path), each named by its coroutine."""
    stamps = records[-1]["stamps"]
    begin, end = stamps[STEPS[0][0]], stamps[FIRST_TEXT]
    return [name for name, at in records[-1]["steps"] if begin <= at <= end]


def measure(requests: int, warm_up: int = 20) -> Timeline:
    servers = Servers()
    try:
        ports = {"direct": servers.fake, "proxy": servers.proxy, "relaying": servers.relaying}
        ports["stamped"] = servers.stamped
        for index in range(warm_up):
            for name, port in ports.items():
                _ask(port, name == "direct", index)
        _stamped(servers.stamped)  # the warm-up's stamps forgotten
        ttfb: dict[str, list[float]] = {name: [] for name in ports}
        for index in range(requests):
            for name, port in ports.items():
                ttfb[name].append(_ask(port, name == "direct", warm_up + index))
        records = _stamped(servers.stamped, "?steps=1")
        for index in range(5):
            _ask(servers.stamped, False, index)
        stepped = _stamped(servers.stamped, "?steps=0")
    finally:
        servers.close()
    rows, total = _rows(records)
    medians = {name: statistics.median(values) / 1000 for name, values in ttfb.items()}
    fake = medians["direct"] * 1000
    return Timeline(rows, total, fake, medians, _task_steps(stepped), len(records))


def table(timeline: Timeline) -> str:
    lines = ["| step (ends when) | covers | µs |", "| --- | --- | --- |"]
    lines += [f"| {step} | {covers} | {us:.1f} |" for step, covers, us in timeline.rows]
    lines.append(f"| **request read to first text written** | | **{timeline.total_us:.1f}** |")
    return "\n".join(lines)


def summary(timeline: Timeline) -> str:
    counted = Counter(timeline.steps)
    named = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in counted.items())
    ttfb = timeline.ttfb_ms
    return (
        f"the fake upstream's own time to its first content event (direct, from the client): "
        f"{timeline.fake_us:.0f} µs\n"
        f"{len(timeline.steps)} task steps before the first text byte: {named}\n"
        f"TTFB p50 at one stream ({timeline.requests} requests): direct {ttfb['direct']:.2f} ms, "
        f"proxy {ttfb['proxy']:.2f} ms, relaying floor {ttfb['relaying']:.2f} ms, "
        f"stamped proxy {ttfb['stamped']:.2f} ms"
    )


def bench_timeline(quick: bool, output: str, requests: int = 100) -> int:
    """Measure, print and write `timeline.json`: what `make bench` runs."""
    timeline = measure(10 if quick else requests, warm_up=3 if quick else 20)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    result = {
        "rows_us": [[step, us] for step, _, us in timeline.rows],
        "total_us": timeline.total_us,
        "fake_us": timeline.fake_us,
        "ttfb_p50_ms": timeline.ttfb_ms,
        "task_steps": timeline.steps,
        "requests": timeline.requests,
    }
    (folder / "timeline.json").write_text(json.dumps(result, indent=2))
    print(table(timeline))
    print(summary(timeline))
    print(f"Timeline: {folder / 'timeline.json'}")
    return 0


def targets(output: str) -> str:
    """Issue 32's targets beside today's figures, from the folder's timeline.json and
    cpu.json (the CPU figures need `--relay-floor`)."""
    folder, lines = Path(output), ["| target | today | met |", "| --- | --- | --- |"]
    if (folder / "timeline.json").exists():
        ttfb = json.loads((folder / "timeline.json").read_text())["ttfb_p50_ms"]
        over = ttfb["proxy"] - ttfb["relaying"]
        today = f"{ttfb['proxy']:.2f} ms, relaying floor {ttfb['relaying']:.2f} ms (+{over:.2f})"
        lines.append(
            f"| TTFB at one stream ≤ relaying floor + 0.5 ms | {today} | {_met(over <= 0.5)} |"
        )
    medians = {}
    if (folder / "cpu.json").exists():
        cpu = json.loads((folder / "cpu.json").read_text())
        medians, ttfbs = cpu["medians"], cpu["ttfb_p50_seconds"]
    if "proxy/relaying" in medians.get("per short stream", {}):
        short = medians["per short stream"]
        ratio, proxy, floor = short["proxy/relaying"], short["proxy"], short["relaying"]
        today = f"{ratio:.2f}x ({proxy * 1e6:.0f} against {floor * 1e6:.0f} µs)"
        lines.append(
            f"| CPU per 5-token stream ≤ 1.25 x relaying floor | {today} | {_met(ratio <= 1.25)} |"
        )
        arrivals = {name: statistics.median(v) * 1000 for name, v in ttfbs.items() if v}
        today = ", ".join(f"{name} {ms:.1f} ms" for name, ms in arrivals.items())
        before = "baseline" in arrivals
        met = _met(arrivals["proxy"] <= arrivals["baseline"] * 1.1) if before else "with --baseline"
        lines.append(f"| TTFB p50, 256 arriving at once: no worse | {today} | {met} |")
        delta = medians["per delta"]
        today = f"proxy/relaying {delta['proxy/relaying']:.2f}x"
        if before:
            today += f", proxy/baseline {delta['proxy/baseline']:.2f}"
        met = _met(delta["proxy/baseline"] <= 1.05) if before else "with --baseline"
        lines.append(f"| CPU per delta: not worse | {today} | {met} |")
    else:
        lines.append(
            "| CPU per 5-token stream ≤ 1.25 x relaying floor | (--only cpu --relay-floor) | |"
        )
    return "\n".join(lines)


def _met(met: bool) -> str:
    return "yes" if met else "**no**"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timeline", description=__doc__)
    parser.add_argument("--requests", type=int, default=100, help="stamped requests")
    parser.add_argument("--output", default="bench-results", help="folder for timeline.json")
    parser.add_argument("--quick", action="store_true", help="10 requests (a smoke run)")
    args = parser.parse_args()
    return bench_timeline(args.quick, args.output, args.requests)


if __name__ == "__main__":
    sys.exit(main())
