"""What the frontend tests share: the system tools they drive, and the proxy's own answer.

Chromium and npm come from the system (apt), not from Playwright's or any other download: a
test that needs one fails, naming the package, when it is missing. The AI SDK tests run in
Node 22 from npm's `node` package, pinned in tests/js/package.json with the SDKs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
MISSING_HINT: Final = (
    "is not installed; the frontend tests need it: "
    "apt-get install chromium fonts-noto-color-emoji fonts-noto-cjk nodejs npm"
)


def require_chromium() -> str:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} {MISSING_HINT}", pytrace=False)
    return str(CHROMIUM)


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} {MISSING_HINT}", pytrace=False)
    return path


def _installed(directory: Path) -> bool:
    dependencies: dict[str, str] = json.loads((directory / "package.json").read_text())[
        "dependencies"
    ]
    for name, spec in dependencies.items():
        installed = directory / "node_modules" / name / "package.json"
        version = spec.rpartition("@")[2]  # "1.2.3", or an alias's "npm:ai@1.2.3"
        if not installed.exists() or json.loads(installed.read_text())["version"] != version:
            return False
    return True


def install_npm_packages(directory: Path) -> None:
    """The exact versions directory/package.json pins, installed once (no lock file is kept)."""
    npm = require_program("npm")
    if _installed(directory):
        return
    install = subprocess.run(
        [npm, "install", "--no-package-lock", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if install.returncode != 0:
        pytest.fail(f"npm install in {directory} failed:\n{install.stderr}", pytrace=False)


AI_SDK_DIRECTORY: Final = Path(__file__).parent / "js"
# npm aliases in tests/js/package.json: ai 5 and the current major, side by side.
AI_SDKS: Final = ("ai5", "ai7")


def install_ai_sdk() -> str:
    """Node 22 and both AI SDKs, installed once into tests/js; the Node executable.

    Node comes from npm's `node` package, not the system's: `ai` 7 needs Node >= 22.
    """
    install_npm_packages(AI_SDK_DIRECTORY)
    return str(AI_SDK_DIRECTORY / "node_modules" / ".bin" / "node")


async def run_node_script(node: str, script: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Run a test client in Node with its options as JSON; the one JSON line it prints."""
    process = await asyncio.create_subprocess_exec(
        node,
        str(script),
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    result: dict[str, Any] = json.loads(stdout)
    return result


@dataclass(slots=True, frozen=True)
class Answer:
    """The proxy's answer to a prompt as a plain HTTP client reads it."""

    text: str
    completed: bool  # False: the body broke off (a failure after the commit point)


async def proxy_answer(
    proxy_url: str, prompt: str, headers: dict[str, str] | None = None
) -> Answer:
    """What the proxy streams for prompt: the fake's reply depends on the prompt alone."""
    received: list[str] = []
    async with (
        httpx.AsyncClient(base_url=proxy_url, timeout=30) as client,
        client.stream("POST", "/v1/stream", json={"prompt": prompt}, headers=headers) as response,
    ):
        try:
            async for text in response.aiter_text():
                received.append(text)
        except httpx.RemoteProtocolError:
            return Answer("".join(received), completed=False)
    return Answer("".join(received), completed=response.status_code == 200)


async def proxy_error_message(
    proxy_url: str, prompt: str, headers: dict[str, str] | None = None
) -> str:
    async with httpx.AsyncClient(base_url=proxy_url, timeout=30) as client:
        response = await client.post("/v1/stream", json={"prompt": prompt}, headers=headers)
    assert response.status_code >= 400, response.text
    message: str = response.json()["error"]["message"]
    return message


class OtherOriginSite:
    """A blank page on its own loopback port: another origin than the proxy's."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"<!doctype html><title>another origin</title><p>another origin</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
