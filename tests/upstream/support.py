"""Helpers for the transport's tests against scripted servers on loopback sockets."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx

from proxy.upstream import UpstreamTransport
from tests.scripted import LAST_CHUNK, OK_HEAD, chunk, read_request


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> None:
    await read_request(reader)
    writer.write(OK_HEAD + chunk(body) + LAST_CHUNK)
    await writer.drain()


def idle_connections(client: httpx.AsyncClient) -> int:
    """Connections the transport keeps open for reuse."""
    transport = client._transport
    assert isinstance(transport, UpstreamTransport)
    return sum(len(idle) for idle in transport._idle.values())


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class Turns:
    """A task counting its turns on the event loop: how often other tasks got to run."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Turns:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)
