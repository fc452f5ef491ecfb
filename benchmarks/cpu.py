"""The proxy's CPU against the floor (issue 17): per delta, per request, per token.

Serving processes that read the same fake upstream: the proxy (`python -m proxy serve`),
the CPU floor (benchmarks/upstream_floor.py, a raw ASGI relay under the same uvicorn
settings), with `--baseline DIR` the proxy of another checkout (the code before a change),
with `--granian` the proxy under granian instead of uvicorn, with `--fastapi-floor` a
bare FastAPI `yield` path operation with no upstream (benchmarks/floor.py), and with
`--relay-floor` one that relays the same upstream with the least code
(benchmarks/relay_floor.py: issue 32's floor). Each round runs
every load against each of them in turn (floor, proxy, baseline, floor, proxy, baseline
...), each run after an unmeasured one that opens as many kept-alive connections, and reads
the serving process's own CPU time (its threads' run time in /proc/PID/task/TID/schedstat,
in nanoseconds) around each run, so the client's and the upstream's CPU are not in it:

    per delta    256 streams x 50 tokens at 20 ms a token (each token its own delta)
    per request  fitted from 256 streams of 5 and of 50 tokens at that pace: the CPU per
                 stream, less 5 times the slope between the two
    per token    16 streams x 8000 tokens with no delay (a read carries many tokens)
    per short stream  the CPU per stream of the 5-token run, all of it (issue 32's target)

Figures are medians over the rounds, with their spread (lowest to highest); ratios are
the median of each round's ratio, so a round's machine state is shared by both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bench import (
    _free_port,
    _process_tree,
    _raise_fd_limit,
    _wait_listening,
)
from benchmarks.loadgen import Scenario, run_scenario

PACED = Scenario("paced", streams=256, tokens=50, token_delay=0.02)
SHORT = Scenario("short", streams=256, tokens=5, token_delay=0.02)
FULL_SPEED = Scenario("full speed", streams=16, tokens=8000, token_delay=0.0)
QUICK_LOADS = (
    Scenario("paced", streams=8, tokens=10, token_delay=0.005),
    Scenario("short", streams=8, tokens=2, token_delay=0.005),
    Scenario("full speed", streams=2, tokens=200, token_delay=0.0),
)
FIGURES = ("per delta", "per request", "per token", "per short stream")


@dataclass(slots=True)
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    # Each round's figures, in seconds: {"per delta": [...], ...}.
    figures: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    first_error: str | None = None
    # Each round's median time to first byte of the short load (256 arriving at once), s.
    ttfb_p50: list[float] = field(default_factory=list)


def _run_time(pid: int) -> float:
    """The CPU seconds of all of a process's threads so far, to the nanosecond: the first
    field of each /proc/PID/task/TID/schedstat (utime + stime in /proc/PID/stat move in clock
    ticks of 10 ms, too coarse for the floor's few ms per run)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _uvicorn_floor(upstream: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.upstream_floor:app", "--port", str(port),
         "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
         "--no-access-log", "--backlog", "4096"],
        env={**os.environ, "BENCH_UPSTREAM": upstream},
    )  # fmt: skip


def _proxy_environment(upstream_url: str, port: int) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PROXY_")},
        "PROXY_UPSTREAM_URL": upstream_url,
        "PROXY_PORT": str(port),
        "PROXY_LOG_LEVEL": "warning",
        "PROXY_MAX_CONCURRENT_STREAMS": "20000",
    }


def _proxy(upstream_url: str, port: int, checkout: Path | None) -> subprocess.Popen[bytes]:
    environment = _proxy_environment(upstream_url, port)
    if checkout is not None:  # its `proxy` package first on the path, before this one's
        environment["PYTHONPATH"] = str(checkout)
    return subprocess.Popen([sys.executable, "-m", "proxy", "serve"], env=environment, cwd=checkout)


def _granian_proxy(upstream_url: str, port: int) -> subprocess.Popen[bytes]:
    """The proxy under granian (a Rust ASGI server), one worker, uvloop: to compare servers."""
    return subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "asgi", "--factory",
         "proxy.app:app_from_environment", "--port", str(port), "--workers", "1",
         "--loop", "uvloop", "--no-ws", "--log-level", "warning", "--backlog", "4096"],
        env=_proxy_environment(upstream_url, port),
    )  # fmt: skip


def _fastapi_floor(
    port: int, app: str = "benchmarks.floor:app", upstream: str = ""
) -> subprocess.Popen[bytes]:
    """benchmarks/floor.py: the fake's text from a bare FastAPI `yield` path operation, no
    upstream: what FastAPI and uvicorn alone cost per request and per delta. With
    `benchmarks.relay_floor:app` and the upstream's address, the relaying floor."""
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--port", str(port),
         "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
         "--no-access-log", "--backlog", "4096"],
        env={**os.environ, "BENCH_UPSTREAM": upstream},
    )  # fmt: skip


class CpuBench:
    def __init__(
        self,
        baseline: Path | None = None,
        granian: bool = False,
        fastapi_floor: bool = False,
        relay_floor: bool = False,
    ) -> None:
        _raise_fd_limit()
        upstream_port = _free_port()
        self.upstream = subprocess.Popen(
            [sys.executable, "-m", "proxy", "fake-upstream", "--port", str(upstream_port)],
            stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{upstream_port}"
        ports = [_free_port() for _ in range(3)]
        self.servers = [
            Server("floor", ports[0], _uvicorn_floor(f"127.0.0.1:{upstream_port}", ports[0])),
            Server("proxy", ports[1], _proxy(url, ports[1], None)),
        ]
        if baseline is not None:
            self.servers.append(Server("baseline", ports[2], _proxy(url, ports[2], baseline)))
        if granian:
            port = _free_port()
            self.servers.append(Server("granian", port, _granian_proxy(url, port)))
        if fastapi_floor:
            port = _free_port()
            self.servers.append(Server("fastapi", port, _fastapi_floor(port)))
        if relay_floor:
            port, relay = _free_port(), "benchmarks.relay_floor:app"
            process = _fastapi_floor(port, relay, f"127.0.0.1:{upstream_port}")
            self.servers.append(Server("relaying", port, process))
        self.generator = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            _wait_listening(upstream_port, self.upstream, "fake upstream")
            for server in self.servers:
                _wait_listening(server.port, server.process, server.name)
        except RuntimeError:
            self.close()
            raise

    def close(self) -> None:
        self.generator.shutdown()
        for process in [server.process for server in self.servers] + [self.upstream]:
            process.terminate()
            process.wait(10)

    async def _cpu_of(self, server: Server, scenario: Scenario) -> float:
        """The server's CPU seconds over one run of `scenario`; its errors counted."""
        pids = _process_tree(server.process.pid)  # granian serves from a child process
        before = sum(map(_run_time, pids))
        # The floor relays the upstream's own request and SSE: the load generator sends it
        # what it sends the upstream, and checks the text in the SSE exact.
        direct = server.name == "floor"  # (the FastAPI floor answers as the proxy does)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self.generator, run_scenario, direct, "127.0.0.1", server.port, scenario
        )
        if scenario.name == SHORT.name and result.ttfbs:
            server.ttfb_p50.append(statistics.median(result.ttfbs))
        if result.errors:
            server.errors += result.errors
            server.first_error = server.first_error or result.first_error
        return sum(map(_run_time, pids)) - before

    async def round(self, loads: tuple[Scenario, Scenario, Scenario]) -> None:
        paced, short, full = loads
        cpu: dict[str, list[float]] = {server.name: [] for server in self.servers}
        for load in loads:  # interleaved: each load on each server, one after another
            for server in self.servers:
                # Unmeasured first: as many connections as the load, each kept alive from
                # here (the proxy's pool lets an idle one go after 4 s, the floor never).
                await self._cpu_of(server, Scenario("warm-up", load.streams, 1, 0.0))
                cpu[server.name].append(await self._cpu_of(server, load))
        for server in self.servers:
            long_cpu, short_cpu, full_cpu = cpu[server.name]
            per_stream = long_cpu / paced.streams - short_cpu / short.streams
            slope = per_stream / (paced.tokens - short.tokens)
            figures = {
                "per delta": long_cpu / (paced.streams * paced.tokens),
                "per request": short_cpu / short.streams - short.tokens * slope,
                "per token": full_cpu / (full.streams * full.tokens),
                # Issue 32's target: the whole CPU of a 5-token stream, request and deltas.
                "per short stream": short_cpu / short.streams,
            }
            for name, value in figures.items():
                server.figures.setdefault(name, []).append(value)


def _spread(values: list[float], scale: float, digits: int = 1) -> str:
    """The median, and the lowest and highest, of one figure's rounds."""
    low, middle, high = (
        f"{v * scale:.{digits}f}" for v in (min(values), statistics.median(values), max(values))
    )
    return f"{middle} ({low}-{high})"


def _paired(mine: list[float], theirs: list[float]) -> list[float]:
    # A tiny run may show no clock tick at all: no ratio then.
    return [a / b if b > 0 else math.nan for a, b in zip(mine, theirs, strict=True)]


def report(servers: list[Server]) -> tuple[str, dict[str, dict[str, float]]]:
    """The markdown table, and the medians (seconds) and ratios of each round's figures:
    each server's to the floor's and, with a baseline, the proxy's to the baseline's."""
    by_name = {server.name: server for server in servers}
    pairs = [(s.name, "floor") for s in servers[1:]]
    pairs += [(name, "proxy") for name in ("granian", "fastapi") if name in by_name]
    if "relaying" in by_name:  # issue 32's targets are the proxy against this floor
        pairs.append(("proxy", "relaying"))
    if "baseline" in by_name:
        pairs.append(("proxy", "baseline"))
    header = " | ".join(["figure"] + [f"{s.name} µs" for s in servers])
    header += "".join(f" | {mine} / {theirs}" for mine, theirs in pairs)
    lines = [f"| {header} |", "|" + " --- |" * (1 + len(servers) + len(pairs))]
    summary: dict[str, dict[str, float]] = {}
    for figure in FIGURES:
        row = [figure] + [_spread(s.figures[figure], 1e6) for s in servers]
        medians = summary[figure] = {}
        for server in servers:
            medians[server.name] = statistics.median(server.figures[figure])
        for mine, theirs in pairs:
            ratios = _paired(by_name[mine].figures[figure], by_name[theirs].figures[figure])
            row.append(_spread(ratios, 1, 2))
            medians[f"{mine}/{theirs}"] = statistics.median(ratios)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines), summary


def ttfb_line(servers: list[Server], streams: int) -> str:
    """Time to first byte of the short load, its streams arriving at once: median of rounds."""
    medians = [
        f"{s.name} {statistics.median(s.ttfb_p50) * 1000:.1f} ms" for s in servers if s.ttfb_p50
    ]
    return f"TTFB p50, {streams} short streams at once: " + ", ".join(medians)


async def run_cpu(
    rounds: int,
    quick: bool,
    baseline: Path | None,
    granian: bool = False,
    fastapi_floor: bool = False,
    relay_floor: bool = False,
) -> tuple[list[Server], str]:
    loads = QUICK_LOADS if quick else (PACED, SHORT, FULL_SPEED)
    bench = CpuBench(baseline, granian, fastapi_floor, relay_floor)
    try:
        for index in range(rounds):
            await bench.round(loads)
            print(f"  CPU round {index + 1}/{rounds} done", flush=True)
    finally:
        bench.close()
    table, _ = report(bench.servers)
    return bench.servers, table


def main(
    rounds: int,
    quick: bool,
    output: str,
    baseline: Path | None = None,
    granian: bool = False,
    fastapi_floor: bool = False,
    relay_floor: bool = False,
) -> int:
    servers, table = asyncio.run(
        run_cpu(rounds, quick, baseline, granian, fastapi_floor, relay_floor)
    )
    _, summary = report(servers)
    result = {
        "rounds": rounds,
        "figures_seconds": {s.name: s.figures for s in servers},
        "medians": summary,
        "errors": {s.name: s.errors for s in servers},
        "first_errors": {s.name: s.first_error for s in servers},
        "ttfb_p50_seconds": {s.name: s.ttfb_p50 for s in servers},
    }
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.json").write_text(json.dumps(result, indent=2))
    print(table)
    print(ttfb_line(servers, (QUICK_LOADS[1] if quick else SHORT).streams))
    errors = sum(s.errors for s in servers)
    for server in servers:
        if server.errors:
            print(f"{server.name}: {server.errors} errors, first: {server.first_error}")
    print(f"CPU figures: {folder / 'cpu.json'}; errors: {errors}")
    return 1 if errors else 0
