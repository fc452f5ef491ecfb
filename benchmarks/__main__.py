"""`python -m benchmarks` (what `make bench` runs): the proxy measured against its upstream."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.bench import FULL, QUICK
from benchmarks.bench import main as bench_main
from benchmarks.cpu import main as cpu_main
from benchmarks.hedging import bench_hedging, print_rows
from benchmarks.memory import bench_memory
from benchmarks.timeline import bench_timeline, targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--workers", type=int, default=1, help="proxy worker processes")
    parser.add_argument("--output", default="bench-results", help="folder for JSON and plot")
    parser.add_argument(
        "--only",
        nargs="*",
        default=(),
        help='scenarios whose name contains any ("cpu": the CPU figures against the floor; '
        '"memory": the memory per open stream; "hedging": TTFT with hedging off and on; '
        "\"timeline\": one request's timeline and issue 32's targets)",
    )
    parser.add_argument(
        "--cpu-rounds", type=int, default=5, help="interleaved rounds of the CPU figures (0: none)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also measure the proxy of another checkout in the CPU figures (before/after)",
    )
    parser.add_argument(
        "--proxy-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the proxy under test, e.g. PROXY_METRICS=false (repeatable)",
    )
    parser.add_argument(
        "--granian", action="store_true", help="also the proxy under granian in the CPU figures"
    )
    parser.add_argument(
        "--fastapi-floor",
        action="store_true",
        help="also a bare FastAPI yield path operation, no upstream, in the CPU figures",
    )
    parser.add_argument(
        "--relay-floor",
        action="store_true",
        help="also a FastAPI yield path operation relaying the upstream, in the CPU figures "
        "(always in a full `make bench`: issue 32's targets are set against it)",
    )
    args = parser.parse_args(argv)
    settings = dict(item.partition("=")[::2] for item in args.proxy_env)
    only = tuple(args.only)
    status = 0
    scenarios = QUICK if args.quick else FULL
    if not only or any(part in s.name for s in scenarios for part in only):
        status = bench_main(args.quick, args.workers, args.output, only, settings)
    if args.cpu_rounds > 0 and (not only or any("cpu" in part.lower() for part in only)):
        figures = (args.cpu_rounds, args.quick, args.output, args.baseline)
        relay_floor = args.relay_floor or not only
        status = cpu_main(*figures, args.granian, args.fastapi_floor, relay_floor) or status
    if not only or "memory" in only:
        status = bench_memory(args.quick, args.output, settings) or status
    if not only or "timeline" in only:
        status = bench_timeline(args.quick, args.output) or status
        print(targets(args.output))
    if not only or "hedging" in only:
        requests = 40 if args.quick else 400
        print_rows(bench_hedging(requests, concurrency=4, slow_start=2.0, slow_every=10))
    return status


if __name__ == "__main__":
    sys.exit(main())
