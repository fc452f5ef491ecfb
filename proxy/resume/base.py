"""What a resume store keeps, and the shape both stores have (issue 13).

A stored stream is its parts in order (proxy/parts.py), each tagged with the character offset
of its end (offsets count every part's characters, proxy/formats/encoders.py), then one end
marker: Done or Failed. It belongs to the client key that started it, and
lives for the TTL after its last write. Starting a stream under an id already in use
replaces it (a chat's next turn): a reader of the old one still reads the old one to its end.

Writers never make the stream they store wait: `append` only queues, and the store writes
in the background. A stream whose text outgrows the byte cap stops being stored and is
marked Failed there, so a resume past the cap ends with an explicit error, never with text
that looks whole; the live client is not affected.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Protocol

import orjson

from proxy.errors import InvalidRequest, NotFound, ProxyError, error_body
from proxy.parts import Part, Reasoning, characters
from proxy.values import Ending, Failed, ending_as_json, ending_from_json


@dataclass(slots=True, frozen=True)
class StoredPart:
    """One part of a stored stream; `end` is the character offset just after it."""

    part: Part
    end: int


StoredItem = StoredPart | Ending


class ResumeTooLarge(ProxyError):
    """The stream outgrew PROXY_RESUME_MAX_BYTES: the rest of it was not stored."""

    status_code = 502
    error_type = "resume_too_large"


def too_large(request_id: str, cap: int) -> Failed:
    failure = ResumeTooLarge(f"the stream outgrew the {cap}-byte resume cap; the rest was not kept")
    return Failed(error_body(failure, request_id))


class StreamWriter(Protocol):
    """The producing side of one stored stream."""

    def append(self, part: Part) -> None:
        """Queue one part (non-empty); never waits."""
        ...

    async def end(self, ending: Ending) -> None:
        """Write everything queued, then the end marker."""
        ...


class StoredStream(Protocol):
    """A stored stream as a reader found it."""

    @property
    def attributes(self) -> Mapping[str, str]:
        """What its producer stored with it (e.g. the chat's message id)."""
        ...

    @property
    def active(self) -> bool:
        """Still being produced when it was found."""
        ...

    @property
    def length(self) -> int:
        """Characters stored when it was found, of every part (all of them once it is not
        active)."""
        ...

    def follow(self, offset: int) -> AsyncGenerator[StoredItem, None]:
        """The parts from character `offset` on, live until the end marker, which comes last.

        Raises StreamLost when nothing new arrives for the store's follow timeout (its producer
        died) and InvalidRequest for an offset past the end of a finished stream.
        """
        ...


class ResumeStore(Protocol):
    async def start(
        self, stream_id: str, owner: str, attributes: Mapping[str, str]
    ) -> StreamWriter:
        """A new stored stream under `stream_id`, replacing any older one."""
        ...

    async def find(self, stream_id: str, owner: str) -> StoredStream:
        """The stream stored under `stream_id`; NotFound when there is none, it expired or
        another client owns it (the same answer, so ids of others' streams stay secret)."""
        ...

    async def aclose(self) -> None: ...


def not_found(stream_id: str) -> NotFound:
    return NotFound(f"no stream {stream_id[:128]!r} to resume")


def past_the_end(offset: int, length: int) -> InvalidRequest:
    return InvalidRequest(f"offset {offset} is past the end of the stream ({length} characters)")


def part_from(item: StoredPart, offset: int) -> StoredPart:
    """What of a part is at or after `offset` (the part that straddles it is cut)."""
    text = characters(item.part)
    start = item.end - len(text)
    if start >= offset:
        return item
    rest = text[offset - start :]
    return StoredPart(rest if isinstance(item.part, str) else Reasoning(rest), item.end)


def dump_ending(ending: Ending) -> bytes:
    return orjson.dumps(ending_as_json(ending))


def load_ending(data: bytes) -> Ending:
    return ending_from_json(orjson.loads(data))
