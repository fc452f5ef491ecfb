"""nginx with docker/nginx.conf on loopback, in front of proxy processes (the `scaled` topology).

The file is the one compose runs: only the lines marked `# upstream servers` and `# listen`
are replaced, and temp paths are added, so what the tests exercise is what ships.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from benchmarks.chaos_servers import render_nginx_conf
from tests.redis_server import free_port


class Nginx:
    def __init__(self, proxy_ports: list[int], prefix: Path) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = render_nginx_conf(proxy_ports, self.port, prefix)
        self._process = subprocess.Popen(
            [
                binary,
                "-p",
                str(prefix),
                "-c",
                str(conf),
                "-e",
                "stderr",
                "-g",
                f"daemon off; pid {prefix / 'nginx.pid'};",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 10
        while True:  # nginx says nothing when it listens: its port answering is the sign
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self._process.stderr.read()}")  # type: ignore[union-attr]
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self._process.send_signal(signal.SIGQUIT)
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
