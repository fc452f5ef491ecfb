"""A real redis-server on an ephemeral loopback port, for the shared rate-limit tests."""

from __future__ import annotations

import shutil
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """redis-server without persistence: a restart comes back empty, as a pod's Redis does."""

    def __init__(self) -> None:
        self._binary = shutil.which("redis-server")
        if self._binary is None:
            raise RuntimeError("redis-server is not installed (CI installs it with apt)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process = self._start()

    def _start(self) -> subprocess.Popen[str]:
        assert self._binary is not None
        process = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:  # its own word that it is ready, not a guess
            if "Ready to accept connections" in line:
                return process
        raise RuntimeError("redis-server exited before it was ready")

    def kill(self) -> None:
        self._process.kill()
        self._process.wait(5)

    def restart(self) -> None:
        """Killed (SIGKILL) and started again, empty, on the same port."""
        self.kill()
        self._process = self._start()
