"""What hedging does to the time to first token (issue 30): `python -m benchmarks.hedging`,
and a row of `make bench`.

Two fake replicas in processes of their own; one holds its first part for `--slow-start`
seconds on every `--slow-every`-th reply (10% by default). The same model is served by two
proxies, one with `hedge_after` off, one with it on; both get the same sequence of requests,
a few at a time, and every answer is checked exact. Printed: TTFT p50 and p99 for each, and the
upstream requests the hedging proxy sent beyond one per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from dataclasses import dataclass

from benchmarks.formats import FORMATS, _check, _free_port, _one_stream, _server

RAW_TEXT = FORMATS[0]
TOKENS = 5


@dataclass(slots=True, frozen=True)
class Row:
    name: str
    p50_ms: float
    p99_ms: float
    extra_requests: int


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _run(port: int, requests: int, concurrency: int, tag: str) -> list[float]:
    """TTFT of each request, `concurrency` at a time, every answer checked exact."""
    times: list[float] = []
    for start in range(0, requests, concurrency):
        batch = [f"hedge {tag} {number}" for number in range(start, start + concurrency)]
        results = await asyncio.gather(*(_one_stream(RAW_TEXT, port, p, p) for p in batch))
        for prompt, (ttfb, body, _) in zip(batch, results, strict=True):
            _check(RAW_TEXT, body, prompt, TOKENS)
            times.append(ttfb)
    return times


def _models(slow: int, fast: int, hedge_after: object) -> str:
    urls = [f"http://127.0.0.1:{slow}", f"http://127.0.0.1:{fast}"]
    return json.dumps([{"name": "m", "urls": urls, "hedge_after": hedge_after}])


def bench_hedging(requests: int, concurrency: int, slow_start: float, slow_every: int) -> list[Row]:
    slow_port, fast_port = _free_port(), _free_port()
    common = ["--tokens", str(TOKENS), "--token-delay", "0.001"]
    slow_args = [*common, "--slow-start", str(slow_start), "--slow-every", str(slow_every)]
    rows = []
    with (
        _server(["fake-upstream", "--port", str(slow_port), *slow_args], slow_port, {}),
        _server(["fake-upstream", "--port", str(fast_port), *common], fast_port, {}),
    ):
        for name, hedge_after in (("hedging off", None), ("hedging on (auto)", "auto")):
            port = _free_port()
            environment = {
                "PROXY_PORT": str(port),
                "PROXY_MODELS": _models(slow_port, fast_port, hedge_after),
                "PROXY_FIRST_TOKEN_TIMEOUT": str(slow_start * 4),
                "PROXY_LOG_LEVEL": "warning",
            }
            with _server(["serve"], port, environment):
                times = asyncio.run(_run(port, requests, concurrency, name))
                extra = asyncio.run(_hedges_started(port))  # one more upstream request each
            ms = [t * 1000 for t in times]
            rows.append(Row(name, statistics.median(ms), _percentile(ms, 0.99), extra))
    return rows


async def _hedges_started(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("llm_proxy_hedges_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def print_rows(rows: list[Row]) -> None:
    print("| proxy | TTFT p50 ms | TTFT p99 ms | extra upstream requests |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row.name} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {row.extra_requests} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--slow-start", type=float, default=2.0, help="seconds a slow reply waits")
    parser.add_argument("--slow-every", type=int, default=10, help="every Nth reply is slow")
    args = parser.parse_args(argv)
    rows = bench_hedging(args.requests, args.concurrency, args.slow_start, args.slow_every)
    print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
