"""Real servers on ephemeral loopback ports, each on its own event loop in a thread.

The proxy runs under uvicorn exactly as in production; the fake upstream records what it
received. Nothing here goes through httpx.ASGITransport, which buffers whole bodies.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import uvicorn
import uvloop

from proxy.app import create_app
from proxy.fake_upstream import FakeRequest, RecordingFakeUpstream
from proxy.settings import Settings
from tests.redis_server import free_port

T = TypeVar("T")


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()  # as in production
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return self.submit(coroutine).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class FakeUpstreamServer:
    def __init__(self, **options: Any) -> None:
        self._thread = LoopThread()
        self.fake = RecordingFakeUpstream(**options)
        self._thread.run(self.fake.start())
        self.url = self.fake.url

    def find(self, marker: str) -> list[FakeRequest]:
        return self.fake.find(marker)

    async def wait_received(self, marker: str, timeout: float = 5) -> FakeRequest:
        """Waits, on the fake's own loop, until a request carrying marker has arrived."""
        return await asyncio.wrap_future(
            self._thread.submit(self.fake.wait_received(marker, timeout))
        )

    async def wait_disconnected(self, marker: str, timeout: float = 5) -> FakeRequest:
        """Waits, on the fake's own loop, until the request carrying marker lost its client."""
        future = self._thread.submit(self.fake.wait_disconnected(marker, timeout))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._thread.run(self.fake.aclose())
        self._thread.stop()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class ProxyServer:
    """The proxy as uvicorn serves it in production, on an ephemeral port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            create_app(settings),
            http="httptools",
            loop="uvloop",
            lifespan="on",
            log_config=None,
            access_log=False,
        )
        self._server = _Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        if not self._server.ready.wait(10):
            raise RuntimeError("the proxy did not start")

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


def proxy_settings(upstream_url: str | None, **overrides: Any) -> Settings:
    """Settings for tests: short timeouts and backoffs, never the developer's .env."""
    values: dict[str, Any] = {
        "upstream_url": upstream_url,
        "first_token_timeout": 2.0,
        "idle_timeout": 1.0,
        "total_timeout": 30.0,
        "retry_backoff": 0.01,
        "max_retry_after": 0.05,
        "connect_timeout": 2.0,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class ProxyProcess:
    """`python -m proxy serve` in its own process, configured only by its environment.

    `command` replaces `python -m proxy serve` (e.g. the image's CMD run from another venv),
    run in `cwd` (default: this one). Its stderr is collected line by line in `lines`, so it
    never blocks on a full pipe.
    """

    def __init__(
        self, command: Sequence[str] | None = None, cwd: str | None = None, **environment: str
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
        env = {**clean, **environment, "PROXY_PORT": str(self.port), "PROXY_LOG_FORMAT": "text"}
        workers = int(env.get("PROXY_WORKERS", "1"))
        self._process = subprocess.Popen(
            list(command or [sys.executable, "-m", "proxy", "serve"]),
            env=env,
            cwd=cwd,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        assert self._process.stderr is not None
        # uvicorn's own word that it is listening, and that every worker has started (with
        # several workers the parent binds the socket but the workers listen on it).
        waiting = {"Uvicorn running on": 1, "Application startup complete": workers}
        for line in self._process.stderr:
            self.lines.append(line)
            for news in waiting:
                if news in line:
                    waiting[news] -= 1
            if not any(count > 0 for count in waiting.values()):
                break
        else:
            raise RuntimeError(
                "the proxy process exited before it was ready:\n" + "".join(self.lines)
            )
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            with self._new_line:
                self.lines.append(line)
                self._new_line.notify_all()
        with self._new_line:
            self.lines.append("")  # end of output
            self._new_line.notify_all()

    def wait_for_line(self, text: str, timeout: float = 10) -> str:
        """The first line of stderr containing text, once the process has written it."""
        with self._new_line:
            found = self._new_line.wait_for(
                lambda: any(text in line for line in self.lines) or self.lines[-1:] == [""],
                timeout,
            )
            matches = [line for line in self.lines if text in line]
        if not found or not matches:
            raise AssertionError(f"no line with {text!r} in:\n" + "".join(self.lines))
        return matches[0]

    @property
    def pid(self) -> int:
        return self._process.pid

    def send_signal(self, signum: int) -> None:
        self._process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code, once the process has exited."""
        return self._process.wait(timeout)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
