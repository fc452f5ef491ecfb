"""One attempt's dealings with an upstream: the request, what its failures mean, and whether
another attempt may follow.

Stateless: the stream's session (session.py) owns what lives as long as a stream and calls
these for each attempt. Nothing here knows a dialect's JSON or our own HTTP statuses beyond
the ProxyError each failure becomes.
"""

from __future__ import annotations

import functools
import random
import time
from email.utils import parsedate_to_datetime

import httpx

from proxy.dialects import UpstreamRequest
from proxy.errors import (
    UpstreamClosedEarly,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from proxy.services import Upstream
from proxy.settings import ModelSpec, Settings
from proxy.upstream import ResponseHeadTooLarge, UpstreamHTTP, response_body

_MAX_ERROR_BODY = 16_384


async def send_request(
    http: UpstreamHTTP, url: str, request: UpstreamRequest, content: bytes
) -> httpx.Response:
    """The upstream's response, its body unread; a failure to reach it as a ProxyError."""
    headers = {"Content-Type": "application/json", **request.headers}
    try:
        return await http.send("POST", url + request.path, content, headers)
    except httpx.TimeoutException:
        raise UpstreamConnectTimeout("timed out connecting to upstream") from None
    except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
        # Never sent (a configured key with a stray space, say): no retry would help.
        raise UpstreamProtocolError(f"request not sent upstream: {exc}") from None
    except ResponseHeadTooLarge as exc:  # the next attempt would get the same head
        raise UpstreamProtocolError(str(exc)) from None
    except httpx.HTTPError:
        raise UpstreamUnavailable("could not connect to upstream") from None


async def status_error(upstream: Upstream, response: httpx.Response) -> UpstreamStatusError:
    """A non-200 answer as an error, with the upstream's message (its secret scrubbed)."""
    body = b""
    try:
        async for chunk in response_body(response):
            body += chunk
            if len(body) >= _MAX_ERROR_BODY:
                break
    except (httpx.HTTPError, UpstreamProtocolError):
        pass
    message = _redact(upstream.dialect.error_message(body), upstream.spec)
    detail = f"upstream answered {response.status_code}"
    return UpstreamStatusError(
        f"{detail}: {message}" if message else detail,
        upstream_status=response.status_code,
        retry_after=_retry_after(response.headers.get("retry-after")),
    )


def retry_delay(settings: Settings, exc: UpstreamError, attempts: int) -> float | None:
    """Seconds to wait before another attempt after this failure, or None: no retry."""
    if not exc.retryable or attempts > settings.retries:
        return None
    backoff = settings.retry_backoff * 2.0 ** (attempts - 1) * random.uniform(0.5, 1.5)
    if exc.retry_after is not None:
        return max(backoff, min(exc.retry_after, settings.max_retry_after))
    return backoff


def replica_at_fault(exc: UpstreamError) -> bool:
    """Whether a failure says the replica is unwell (rest it) rather than the request."""
    if isinstance(exc, UpstreamStatusError):
        return exc.upstream_status >= 500
    return isinstance(exc, UpstreamUnavailable | UpstreamConnectTimeout | UpstreamClosedEarly)


async def reachable(http: UpstreamHTTP, upstream: Upstream, settings: Settings) -> bool:
    """Whether a healthy replica answers HTTP at all (any status will do)."""
    for url in upstream.balancer.healthy_urls():
        try:
            response = await http.send("GET", url + "/", timeout=min(settings.connect_timeout, 2))
        except httpx.HTTPError:
            continue
        await response.aclose()
        return True
    return False


@functools.lru_cache(maxsize=256)
def loggable_url(url: str) -> str:
    """The URL without user info or query, where credentials hide."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path.rstrip('/')}"


def _redact(message: str, spec: ModelSpec) -> str:
    if spec.api_key is not None:
        secret = spec.api_key.get_secret_value()
        if secret:
            message = message.replace(secret, "**********")
    return message


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
