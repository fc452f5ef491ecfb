"""Command line: `python -m proxy serve | fake-upstream` (the benchmark: `python -m benchmarks`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn

from proxy.multiprocess import shared_metrics_directory
from proxy.settings import ConfigError, Settings, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--host", help="listen address (overrides PROXY_HOST)")
    serve.add_argument("--port", type=int, help="listen port (overrides PROXY_PORT)")

    fake = commands.add_parser("fake-upstream", help="run the fake upstream alone")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=9000)
    fake.add_argument("--tokens", type=int, help="tokens per reply (default: the whole reply)")
    fake.add_argument("--token-delay", type=float, default=0.02, help="seconds per token")
    fake.add_argument(
        "--slow-start", type=float, default=0.0, help="seconds a slow reply holds its first part"
    )
    fake.add_argument("--slow-every", type=int, default=1, help="every Nth reply is slow")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.host, args.port)
    return _fake_upstream(args)


def _serve(host: str | None, port: int | None) -> int:
    try:
        settings = load_settings(host=host, port=port)
    except ConfigError as exc:
        print(f"llm-stream-proxy: invalid configuration: {exc}", file=sys.stderr)
        return 2
    # The workers' metrics directory exists, and its variable is set, before the app (and
    # with it prometheus-client) is imported here or in any worker.
    with shared_metrics_directory(settings):
        return _run_server(settings)


def _run_server(settings: Settings) -> int:
    from proxy.app import create_app
    from proxy.logs import configure_logging

    try:
        app = create_app(settings)
    except ConfigError as exc:
        print(f"llm-stream-proxy: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    # Several workers re-create the app in each process, from the environment.
    target = "proxy.app:app_from_environment" if settings.workers > 1 else app
    # uvicorn drains on SIGTERM, then raises the signal again once its handlers are gone:
    # a drained proxy has done what SIGTERM asks, so that ends the process with 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(target, **server_options(settings))
    return 0


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's keywords for `serve`; each worker process gets the same."""
    return {
        "factory": settings.workers > 1,
        "workers": settings.workers,
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_config": None,
        "access_log": False,
        "log_level": settings.log_level,
        # Thousands of clients may connect at once (uvicorn's default queue is 2048).
        "backlog": 4096,
        # On SIGTERM: stop accepting, let open streams finish, then cancel the rest, which
        # proxy/drain.py turns into aborts. uvicorn's default waits without a bound.
        "timeout_graceful_shutdown": settings.shutdown_grace,
        "timeout_keep_alive": settings.keepalive_timeout,
    }


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _fake_upstream(args: argparse.Namespace) -> int:
    from proxy.fake_upstream import serve_fake_upstream

    fake = serve_fake_upstream(
        args.host,
        args.port,
        tokens=args.tokens,
        token_delay=args.token_delay,
        slow_start=args.slow_start,
        slow_every=args.slow_every,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(fake)
    return 0


if __name__ == "__main__":
    sys.exit(main())
