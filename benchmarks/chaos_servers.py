"""The chaos soak's servers, as processes on loopback: redis-server, the fake upstream, proxy
replicas and nginx (docker/nginx.conf, as tests/nginx_server.py renders it). Each can be
killed (SIGKILL) and started again on the same port; every log goes to a file in `folder`,
appended across restarts, so the soak can read them all afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

NGINX_CONF = Path(__file__).resolve().parent.parent / "docker" / "nginx.conf"
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} before it listened")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {port} within {START_TIMEOUT} s")


class Service:
    """One process on a fixed loopback port: started, killed, started again."""

    def __init__(
        self,
        name: str,
        command: list[str],
        folder: Path,
        port: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.log = folder / f"{name}.log"
        self._command = [part.replace("{port}", str(self.port)) for part in command]
        given = dict(os.environ) if env is None else env  # the whole environment
        self._env = {k: v.replace("{port}", str(self.port)) for k, v in given.items()}
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                self._command, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_listening(self.port, self._process, self.name)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)

    def stop(self) -> None:
        """SIGTERM (nginx: SIGQUIT), then SIGKILL if it lingers."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT if self.name == "nginx" else signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


def redis_service(folder: Path) -> Service:
    binary = shutil.which("redis-server") or "redis-server"
    # No persistence: a restart comes back empty, as a pod's Redis does.
    command = [binary, "--port", "{port}", "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    return Service("redis", [*command, "no"], folder)


def upstream_service(folder: Path) -> Service:
    command = [sys.executable, "-m", "proxy", "fake-upstream", "--port", "{port}"]
    return Service("upstream", command, folder)


def replica_service(index: int, folder: Path, env: dict[str, str]) -> Service:
    # Configured only by the soak, never by the developer's PROXY_* variables.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    environment = clean | env | {"PROXY_PORT": "{port}"}
    command = [sys.executable, "-m", "proxy", "serve"]
    return Service(f"replica-{index}", command, folder, env=environment)


def render_nginx_conf(proxy_ports: list[int], listen_port: int, prefix: Path) -> Path:
    """docker/nginx.conf with loopback servers, a loopback listener and temp paths in prefix."""
    lines = []
    for line in NGINX_CONF.read_text().splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        if line.endswith("# upstream servers"):
            options = " ".join(line.strip().split()[2:])
            lines += [f"{indent}server 127.0.0.1:{port} {options}" for port in proxy_ports]
        elif line.endswith("# listen"):
            lines.append(f"{indent}listen 127.0.0.1:{listen_port};")
        elif line.strip() == "http {":
            lines.append(line)
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                lines.append(f"    {kind}_temp_path {prefix / kind};")
        else:
            lines.append(line)
    rendered = prefix / "nginx.conf"
    rendered.write_text("\n".join(lines) + "\n")
    return rendered


def nginx_service(proxy_ports: list[int], folder: Path) -> Service:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    listen = free_port()
    conf = render_nginx_conf(proxy_ports, listen, folder)
    daemon = f"daemon off; pid {folder / 'nginx.pid'};"
    command = [binary, "-p", str(folder), "-c", str(conf), "-e", "stderr", "-g", daemon]
    return Service("nginx", command, folder, port=listen)
