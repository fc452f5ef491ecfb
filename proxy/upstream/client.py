"""Requests to the upstreams: httpx requests, sent through the one UpstreamTransport.

No httpx.AsyncClient: its per-request work (URL merging, auth and redirect flows, a cookie
jar shared by every user's requests) is all unwanted here, and all on every request's path.
"""

from __future__ import annotations

import base64
import functools

import httpx

from proxy.upstream.pool import UpstreamTransport

_HEADERS = {
    # What LLM servers send anyway; a gateway that compresses regardless gets inflated.
    "Accept-Encoding": "identity",
    "User-Agent": "llm-stream-proxy",
}


class UpstreamHTTP:
    def __init__(self, connect_timeout: float) -> None:
        self._transport = UpstreamTransport()
        # No read timeout: the session bounds first tokens and idle gaps itself.
        self._timeouts = {"connect": connect_timeout, "read": None, "write": connect_timeout}

    async def send(
        self,
        method: str,
        url: str,
        content: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """The response with its body unread: close it (`aclose`) when done."""
        target, authorization = _target(url)
        all_headers = {**_HEADERS, **authorization, **(headers or {})}
        timeouts = self._timeouts if timeout is None else dict.fromkeys(self._timeouts, timeout)
        request = httpx.Request(
            method, target, content=content, headers=all_headers, extensions={"timeout": timeouts}
        )
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._transport.aclose()


@functools.lru_cache(maxsize=256)
def _target(url: str) -> tuple[httpx.URL, dict[str, str]]:
    """The parsed URL, and Basic credentials from its user info (`http://user:pw@host`)."""
    parsed = httpx.URL(url)
    if not parsed.username:
        return parsed, {}
    credentials = f"{parsed.username}:{parsed.password}".encode()
    return parsed, {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
