"""Response bodies with their Content-Encoding undone, incrementally.

The transport hands bodies over raw, as httpx expects of a transport; `response_body` is
what the stream session reads instead of `aiter_raw`.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

import httpx

from proxy.errors import UpstreamProtocolError
from proxy.upstream.connection import ResponseStream

# The most one step of inflating hands over, as the transport's reads: a small compressed
# read can stand for gigabytes, and none of it may pile up at once.
_MAX_INFLATED = 64 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS
_INFLATABLE = {"gzip": _GZIP_WBITS, "x-gzip": _GZIP_WBITS, "deflate": _ZLIB_WBITS}


def response_body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive, decoded per Content-Encoding.

    Plain bodies (no Content-Encoding, or `identity`) are the transport's reads untouched
    (UpstreamTransport's own stream read directly, not through httpx's `aiter_raw`).
    gzip (several members too) and deflate (zlib-wrapped or raw, as httpx takes it) are
    inflated incrementally. Anything else raises UpstreamProtocolError: we ask for
    `identity`, and httpx's br and zstd decoders put no bound on what one read inflates to.
    """
    encoding = response.headers.get("content-encoding")
    stream = response.stream
    raw = stream if isinstance(stream, ResponseStream) else response.aiter_raw()
    if encoding is None:
        return raw
    codings = [c for c in encoding.replace(" ", "").lower().split(",") if c and c != "identity"]
    if not codings:
        return raw
    if len(codings) > 1 or codings[0] not in _INFLATABLE:
        raise UpstreamProtocolError(
            f"upstream sent a body encoded as {encoding!r}, which the proxy cannot decode"
        )
    return InflatedBody(raw, codings[0], _INFLATABLE[codings[0]])


class InflatedBody:
    """A gzip or deflate body, inflated at most _MAX_INFLATED bytes a step.

    A class rather than an async generator, as the stream session is: nothing is left
    suspended for the garbage collector when the client leaves.
    """

    __slots__ = (
        "_coding",
        "_ended",
        "_inflate",
        "_input",
        "_output_pending",
        "_raw",
        "_received",
        "_wbits",
        "_zlib_head",
    )

    def __init__(self, raw: AsyncIterator[bytes], coding: str, wbits: int) -> None:
        self._raw = raw
        self._coding = coding
        self._wbits = wbits
        self._inflate = zlib.decompressobj(wbits)
        self._input = b""
        # A step that filled its output may have left output in zlib with no input left.
        self._output_pending = False
        self._received = False
        # The first bytes of a "deflate" body, until its 2-byte zlib header has passed: if
        # it does not, the body is raw deflate and inflating starts again from them.
        self._zlib_head: bytes | None = b"" if wbits == _ZLIB_WBITS else None
        self._ended = False

    def __aiter__(self) -> InflatedBody:
        return self

    async def __anext__(self) -> bytes:
        read = False  # a read of the body this step: it waited, or stepped through the loop
        while True:
            if self._input or self._output_pending:
                data = self._step()
                if data:
                    if not read:  # inflated from what an earlier read left: as the transport
                        await asyncio.sleep(0)  # does, a step through the loop all the same
                    return data
            elif self._ended:
                raise StopAsyncIteration
            else:
                try:
                    self._input = await anext(self._raw)
                except StopAsyncIteration:
                    self._ended = True
                    if self._received and not self._inflate.eof:
                        raise self._failure("it ends inside the compressed stream") from None
                    raise
                self._received = True
                read = True

    def _step(self) -> bytes:
        inflate = self._inflate
        data = self._input
        if inflate.eof:  # a gzip member ended and more bytes follow: the next member
            if self._wbits != _GZIP_WBITS:
                raise self._failure("data after the end of the deflate stream")
            inflate = self._inflate = zlib.decompressobj(self._wbits)
        try:
            output = inflate.decompress(data, _MAX_INFLATED)
        except zlib.error as exc:
            head = self._zlib_head
            if head is None:
                raise self._failure(str(exc)) from None
            self._zlib_head = None
            self._wbits = _RAW_DEFLATE_WBITS
            self._inflate = zlib.decompressobj(self._wbits)
            self._input = head + data
            return self._step()
        self._input = inflate.unused_data if inflate.eof else inflate.unconsumed_tail
        self._output_pending = len(output) == _MAX_INFLATED and not inflate.eof
        if self._zlib_head is not None:
            head = self._zlib_head + data[: len(data) - len(self._input)]
            self._zlib_head = head if len(head) < 2 else None
        return output

    def _failure(self, detail: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"upstream sent a broken {self._coding} body: {detail}")
