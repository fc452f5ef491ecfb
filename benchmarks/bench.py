"""`python -m benchmarks`: what the proxy costs over talking to the upstream directly.

Three processes besides this one: the fake upstream, the proxy under uvicorn, and the load
generator (a fresh one per run). Each scenario runs directly against the upstream and through
the proxy in the same invocation, so every figure is a ratio against the same machine state.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.loadgen import RunResult, Scenario, run_scenario

FULL = (
    Scenario("1 stream, LLM pace", streams=1, tokens=50, token_delay=0.02, rounds=10),
    Scenario("64 concurrent, LLM pace", streams=64, tokens=50, token_delay=0.02, rounds=3),
    Scenario("256 concurrent, LLM pace", streams=256, tokens=50, token_delay=0.02, rounds=3),
    Scenario("16 concurrent, no delay", streams=16, tokens=2000, token_delay=0.0),
    Scenario("10000 slow streams", streams=10_000, tokens=10, token_delay=1.0),
)
QUICK = (
    Scenario("1 stream, LLM pace", streams=1, tokens=5, token_delay=0.01, rounds=2),
    Scenario("8 concurrent, LLM pace", streams=8, tokens=5, token_delay=0.01),
    Scenario("4 concurrent, no delay", streams=4, tokens=200, token_delay=0.0),
    Scenario("50 slow streams", streams=50, tokens=3, token_delay=0.2),
)


@dataclass(slots=True)
class Row:
    scenario: str
    streams: int
    rounds: int
    direct_ttfb_p50_ms: float
    direct_ttfb_p99_ms: float
    proxy_ttfb_p50_ms: float
    proxy_ttfb_p99_ms: float
    added_ttfb_p50_ms: float
    direct_gap_p50_ms: float
    direct_gap_p99_ms: float
    proxy_gap_p50_ms: float
    proxy_gap_p99_ms: float
    direct_tokens_per_s: float
    proxy_tokens_per_s: float
    throughput_ratio: float
    floor_ttfb_p50_ms: float
    floor_added_ttfb_p50_ms: float
    floor_tokens_per_s: float
    floor_throughput_ratio: float
    floor_errors: int
    proxy_rss_peak_mb: float
    proxy_rss_per_stream_kb: float
    upstream_cpu_percent: float
    loadgen_cpu_percent: float
    errors: int
    first_error: str | None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _raise_fd_limit() -> None:
    # 10,000 streams need 20,000+ sockets in the proxy; children inherit the raised limit.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split()
        for child in children:
            pids.extend(_process_tree(int(child)))
    return pids


def _rss_kb(pid: int) -> int:
    total = 0
    for member in _process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_listening(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not start listening on {port}")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Bench:
    def __init__(self, workers: int, proxy_settings: dict[str, str] | None = None) -> None:
        _raise_fd_limit()
        self.upstream_port, self.proxy_port = _free_port(), _free_port()
        self.floor_port = _free_port()
        python = sys.executable
        self.upstream = subprocess.Popen(
            [python, "-m", "proxy", "fake-upstream", "--port", str(self.upstream_port)],
            stdout=subprocess.DEVNULL,
        )
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROXY_")},
            "PROXY_UPSTREAM_URL": f"http://127.0.0.1:{self.upstream_port}",
            "PROXY_PORT": str(self.proxy_port),
            "PROXY_LOG_LEVEL": "warning",
            "PROXY_MAX_CONCURRENT_STREAMS": "20000",
            "PROXY_WORKERS": str(workers),
            **(proxy_settings or {}),
        }
        self.proxy = subprocess.Popen([python, "-m", "proxy", "serve"], env=environment)
        self.floor = subprocess.Popen(
            [python, "-m", "uvicorn", "benchmarks.floor:app", "--port", str(self.floor_port),
             "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
             "--log-level", "warning", "--no-access-log", "--backlog", "4096"],
        )  # fmt: skip
        self.generator = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            _wait_listening(self.upstream_port, self.upstream, "fake upstream")
            _wait_listening(self.proxy_port, self.proxy, "proxy")
            _wait_listening(self.floor_port, self.floor, "bench floor")
        except RuntimeError:
            self.close()  # leave no server behind
            raise

    def close(self) -> None:
        self.generator.shutdown()
        for process in (self.proxy, self.floor, self.upstream):
            process.terminate()
            process.wait(10)

    async def _timed(self, target: str, scenario: Scenario) -> tuple[RunResult, int, float]:
        """A run against "direct", "proxy" or "floor", the proxy's peak RSS during it (KB),
        and the upstream's CPU share."""
        direct = target == "direct"
        port = {"direct": self.upstream_port, "proxy": self.proxy_port}.get(target, self.floor_port)
        upstream_cpu = _cpu_seconds(self.upstream.pid)
        loop = asyncio.get_running_loop()
        run = loop.run_in_executor(
            self.generator, run_scenario, direct, "127.0.0.1", port, scenario
        )
        peak = 0
        while not run.done():
            peak = max(peak, _rss_kb(self.proxy.pid))
            await asyncio.wait({run}, timeout=0.05)  # sample RSS while the run goes on
        result = run.result()
        upstream_share = (_cpu_seconds(self.upstream.pid) - upstream_cpu) / result.wall
        return result, peak, upstream_share

    async def warm_up(self, scenario: Scenario) -> None:
        """Unmeasured streams first: a cold process or an empty pool is not the steady state."""
        warm = Scenario("warm-up", streams=min(scenario.streams, 64), tokens=2, token_delay=0.0)
        for target in ("direct", "proxy", "floor"):
            await self._timed(target, warm)

    async def scenario(self, scenario: Scenario) -> Row:
        await self.warm_up(scenario)
        idle_rss = _rss_kb(self.proxy.pid)
        direct, _, upstream_share = await self._timed("direct", scenario)
        proxied, peak, _ = await self._timed("proxy", scenario)
        floor, _, _ = await self._timed("floor", scenario)
        direct_rate = direct.tokens / direct.wall
        proxy_rate = proxied.tokens / proxied.wall
        floor_rate = floor.tokens / floor.wall
        return Row(
            scenario=scenario.name,
            streams=scenario.streams,
            rounds=scenario.rounds,
            direct_ttfb_p50_ms=_percentile(direct.ttfbs, 0.5),
            direct_ttfb_p99_ms=_percentile(direct.ttfbs, 0.99),
            proxy_ttfb_p50_ms=_percentile(proxied.ttfbs, 0.5),
            proxy_ttfb_p99_ms=_percentile(proxied.ttfbs, 0.99),
            added_ttfb_p50_ms=_percentile(proxied.ttfbs, 0.5) - _percentile(direct.ttfbs, 0.5),
            direct_gap_p50_ms=_percentile(direct.gaps, 0.5),
            direct_gap_p99_ms=_percentile(direct.gaps, 0.99),
            proxy_gap_p50_ms=_percentile(proxied.gaps, 0.5),
            proxy_gap_p99_ms=_percentile(proxied.gaps, 0.99),
            direct_tokens_per_s=direct_rate,
            proxy_tokens_per_s=proxy_rate,
            throughput_ratio=proxy_rate / direct_rate if direct_rate else 0.0,
            floor_ttfb_p50_ms=_percentile(floor.ttfbs, 0.5),
            floor_added_ttfb_p50_ms=_percentile(floor.ttfbs, 0.5) - _percentile(direct.ttfbs, 0.5),
            floor_tokens_per_s=floor_rate,
            floor_throughput_ratio=floor_rate / direct_rate if direct_rate else 0.0,
            floor_errors=floor.errors,
            proxy_rss_peak_mb=peak / 1024,
            proxy_rss_per_stream_kb=max(0, peak - idle_rss) / scenario.streams,
            upstream_cpu_percent=100 * upstream_share,
            loadgen_cpu_percent=100 * proxied.cpu / proxied.wall,
            errors=direct.errors + proxied.errors,
            first_error=direct.first_error or proxied.first_error,
        )


def _table(rows: list[Row]) -> str:
    header = (
        f"{'scenario':<26} {'TTFB p50 direct/proxy ms':>25} {'added':>7} {'gap p99 d/p ms':>15} "
        f"{'tok/s direct':>12} {'tok/s proxy':>12} {'ratio':>6} {'RSS MB':>7} {'KB/str':>7} "
        f"{'up cpu':>6} {'errors':>6} {'floor added':>11} {'floor ratio':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.scenario:<26} {r.direct_ttfb_p50_ms:>11.2f} / {r.proxy_ttfb_p50_ms:>10.2f} "
            f"{r.added_ttfb_p50_ms:>7.2f} {r.direct_gap_p99_ms:>6.1f} / {r.proxy_gap_p99_ms:>6.1f} "
            f"{r.direct_tokens_per_s:>12.0f} {r.proxy_tokens_per_s:>12.0f} "
            f"{r.throughput_ratio:>6.2f} {r.proxy_rss_peak_mb:>7.1f} "
            f"{r.proxy_rss_per_stream_kb:>7.1f} {r.upstream_cpu_percent:>5.0f}% {r.errors:>6} "
            f"{r.floor_added_ttfb_p50_ms:>11.2f} {r.floor_throughput_ratio:>11.2f}"
        )
    return "\n".join(lines)


def _write_report(output: Path, report: dict[str, Any]) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "latest.json").write_text(json.dumps(report, indent=2))


def _plot(rows: list[Row], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    paced = [r for r in rows if "LLM pace" in r.scenario]
    figure, (ttfb, ratio) = plt.subplots(1, 2, figsize=(9, 3.4))
    streams = [r.streams for r in paced]
    ttfb.plot(streams, [r.added_ttfb_p50_ms for r in paced], marker="o")
    ttfb.set(xscale="log", xlabel="concurrent streams", ylabel="ms", title="added TTFB p50")
    ratio.plot(streams, [r.throughput_ratio for r in paced], marker="o")
    ratio.set(xscale="log", xlabel="concurrent streams", ylabel="proxy / direct",
              title="tokens/s, proxy vs direct", ylim=(0, 1.1))  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


async def run_bench(
    quick: bool,
    workers: int,
    output: Path,
    only: tuple[str, ...] = (),
    proxy_settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    scenarios = [
        s for s in (QUICK if quick else FULL) if not only or any(part in s.name for part in only)
    ]
    bench = Bench(workers, proxy_settings)
    try:
        rows = []
        for scenario in scenarios:
            row = await bench.scenario(scenario)
            print(f"  done: {scenario.name}", flush=True)
            rows.append(row)
    finally:
        bench.close()
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "workers": workers,
            "date": time.strftime("%Y-%m-%d"),
        },
        "scenarios": [asdict(row) for row in rows],
    }
    _write_report(output, report)
    print(_table(rows))
    if _plot(rows, output / "bench.png"):
        print(f"plot: {output / 'bench.png'}")
    print(f"report: {output / 'latest.json'}")
    return report


def main(
    quick: bool,
    workers: int,
    output: str,
    only: tuple[str, ...] = (),
    proxy_settings: dict[str, str] | None = None,
) -> int:
    report = asyncio.run(run_bench(quick, workers, Path(output), only, proxy_settings))
    errors = sum(row["errors"] for row in report["scenarios"])
    summary = statistics.fmean(row["throughput_ratio"] for row in report["scenarios"])
    print(f"errors: {errors}; mean throughput ratio {summary:.2f}")
    return 1 if errors else 0
