"""Resumable streams (issue 13): a stream that outlives its client, stored as it is produced.

A resumable stream is driven by a producer task of its own, from before the
commit point to its end, whoever is reading: its watchdog belongs to that task, and once
the stream is committed it no longer cares about the client. Every part goes to two places:
this process's live channel, which the client that started the stream reads (no store
round trip on its path, and no byte cap), and the resume store, which any replica reads a
resume from. The stream keeps its admission ticket until the producer is done.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from proxy.errors import RedisUnavailable, ShuttingDown, error_body
from proxy.parts import ItemSource, Part, ReasoningSignature, ToolCallDelta
from proxy.resume import (
    MemoryResumeStore,
    ResumeStore,
    StoredStream,
    StreamWriter,
    open_resume_store,
)
from proxy.resume.memory import MemoryStream
from proxy.settings import ResumePolicy
from proxy.values import Done, Ending, Failed


class LiveStream(ItemSource, Protocol):
    """A stream as its producer drives it (a StreamSession): its parts, then its Ending."""

    request_id: str

    def outlive_client(self) -> None: ...

    def cancelled(self) -> object: ...


class Tee:
    """One writer in front of two: the live channel and the resume store."""

    __slots__ = ("_live", "_stored")

    def __init__(self, live: MemoryStream, stored: StreamWriter) -> None:
        self._live = live
        self._stored = stored

    def append(self, part: Part) -> None:
        if isinstance(part, ToolCallDelta | ReasoningSignature):
            # The resumable routes take no tools and carry no signature: nothing to keep.
            return
        self._live.append(part)
        self._stored.append(part)

    async def end(self, ending: Ending) -> None:
        await self._live.end(ending)
        await self._stored.end(ending)


class Unstored:
    """The writer of a stream the store could not take."""

    def append(self, part: Part) -> None:
        pass

    async def end(self, ending: Ending) -> None:
        pass


class ResumableStreams:
    """PROXY_RESUME: the store, this process's live channels and its producer tasks."""

    def __init__(self, store: ResumeStore) -> None:
        self.store = store
        # The settings of live channels (never registered: each lives as long as its readers).
        self._live = MemoryResumeStore(
            ttl=sys.float_info.max, max_bytes=sys.maxsize, follow_timeout=None
        )
        self._producers: set[asyncio.Task[None]] = set()

    @classmethod
    def from_policy(cls, policy: ResumePolicy | None) -> ResumableStreams | None:
        return None if policy is None else cls(open_resume_store(policy))

    async def start(
        self,
        stream: LiveStream,
        open_stream: Callable[[], Awaitable[None]],
        stream_id: str,
        owner: str,
        attributes: Mapping[str, str],
    ) -> StoredStream:
        """Open the stream up to its commit point in a producer task that then drives it to
        its end; the live channel to read it from. Errors before the commit point raise
        here, as for any stream."""
        committed: asyncio.Future[MemoryStream] = asyncio.get_running_loop().create_future()
        producer = asyncio.get_running_loop().create_task(
            self._produce(stream, open_stream, committed, stream_id, owner, attributes)
        )
        self._producers.add(producer)
        producer.add_done_callback(self._producers.discard)
        try:
            return await committed
        except asyncio.CancelledError:
            producer.cancel()
            raise

    async def _produce(
        self,
        stream: LiveStream,
        open_stream: Callable[[], Awaitable[None]],
        committed: asyncio.Future[MemoryStream],
        stream_id: str,
        owner: str,
        attributes: Mapping[str, str],
    ) -> None:
        try:
            await open_stream()
            stream.outlive_client()
            stored = await self._stored(stream_id, owner, attributes)
            live = MemoryStream(self._live, owner, attributes)
        except BaseException as exc:
            if not committed.done():
                committed.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        committed.set_result(live)
        await self._drain(stream, Tee(live, stored))

    async def _stored(
        self, stream_id: str, owner: str, attributes: Mapping[str, str]
    ) -> StreamWriter:
        try:
            return await self.store.start(stream_id, owner, attributes)
        except RedisUnavailable:  # logged where it failed, with the request id
            # The stream is still served live; only a resume of it will not be possible.
            return Unstored()

    async def _drain(self, stream: LiveStream, writer: Tee) -> None:
        ending: Ending | None = None
        try:
            async for item in stream:
                if isinstance(item, Done | Failed):
                    ending = item
                else:
                    writer.append(item)
        finally:
            if ending is None:  # cancelled: the proxy is shutting down
                stream.cancelled()
                failure = ShuttingDown("the proxy shut down before the stream ended")
                ending = Failed(error_body(failure, stream.request_id))
            try:
                await writer.end(ending)
            finally:
                await stream.aclose()

    async def aclose(self) -> None:
        for producer in list(self._producers):
            producer.cancel()
        await asyncio.gather(*self._producers, return_exceptions=True)
        await self._live.aclose()
        await self.store.aclose()


def owner_of(client: str | None) -> str:
    """Whom a stored stream belongs to: the client key's id ("" on an open proxy)."""
    return client or ""
