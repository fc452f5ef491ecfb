"""`python -m benchmarks` (what `make bench` runs): the proxy measured against its upstream."""

from __future__ import annotations

import argparse
import sys

from benchmarks.bench import main as bench_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--workers", type=int, default=1, help="proxy worker processes")
    parser.add_argument("--output", default="bench-results", help="folder for JSON and plot")
    parser.add_argument("--only", nargs="*", default=(), help="scenarios whose name contains any")
    parser.add_argument(
        "--proxy-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the proxy under test, e.g. PROXY_METRICS=false (repeatable)",
    )
    args = parser.parse_args(argv)
    settings = dict(item.partition("=")[::2] for item in args.proxy_env)
    return bench_main(args.quick, args.workers, args.output, tuple(args.only), settings)


if __name__ == "__main__":
    sys.exit(main())
