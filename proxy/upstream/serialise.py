"""A request as the bytes that go upstream, and the requests that never go.

Sent: requests with a bytes body (`content=`, `json=`, `data=`), with Content-Length, head and
body as one write; header names and values checked against the RFC 9110 field grammar (a name
is a token; a value is visible characters and obs-text with single spaces or tabs between).
A header outside it is httpx.LocalProtocolError, before a byte is sent.

Refused with httpx.UnsupportedProtocol, before a byte is sent:
- HEAD (its answer has a length but no body, which httptools cannot be told) and CONNECT.
- Streamed bodies (anything but a bytes body), and `Transfer-Encoding`, `Expect` (the body
  would go out before the interim answer) and `Upgrade` headers.
"""

from __future__ import annotations

import re

import httpx

# RFC 9110 §5.1, §5.5: a field name is a token; a field value is visible characters and
# obs-text, with single spaces or tabs only between them. Stricter than h11, which lets
# control characters other than NUL through for the sake of old servers.
_is_token = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch
_is_field_value = re.compile(
    rb"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?"
).fullmatch
# Requests whose answer or body this transport cannot frame: a HEAD answer carries a length
# but no body (httptools cannot be told so), CONNECT turns the socket into a tunnel, and
# `Expect` waits for an interim answer before the body; streamed bodies are refused by type.
_REFUSED_METHODS = frozenset({"HEAD", "CONNECT"})
_REFUSED_HEADERS = frozenset({b"expect", b"transfer-encoding", b"upgrade"})


def refuse_unframeable(request: httpx.Request) -> None:
    """Raises httpx.UnsupportedProtocol for a method or body this transport cannot frame."""
    if request.method in _REFUSED_METHODS:
        raise httpx.UnsupportedProtocol(
            f"the upstream transport does not send {request.method} requests", request=request
        )
    if not isinstance(request.stream, httpx.ByteStream):
        raise httpx.UnsupportedProtocol(
            "the upstream transport sends bytes bodies only, not streamed ones",
            request=request,
        )


def request_bytes(request: httpx.Request, body: bytes) -> bytes:
    """The request head and body as one write."""
    target = request.url.raw_path
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        if not _is_token(name) or not _is_field_value(value):
            raise httpx.LocalProtocolError(
                f"header {name.decode('latin-1')!r} is outside the HTTP field grammar",
                request=request,
            )
        if name.lower() in _REFUSED_HEADERS:
            raise httpx.UnsupportedProtocol(
                f"the upstream transport does not send {name.decode()} requests", request=request
            )
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)
