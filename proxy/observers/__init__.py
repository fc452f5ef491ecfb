"""Who hears about streams: the log line, the metrics, and whatever comes next.

A stream's start (it has its model and goes upstream), each attempt's start (which may add
headers to its request: a trace context) and end, and the stream's end are events; observers
are registered once, at start-up (app.py), and handed final records. A new observer is one
new module with a subclass of StreamObserver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from proxy.record import AttemptRecord, AttemptStarted, StreamRecord

NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class StreamObserver:
    """Overrides what it observes; the rest costs nothing."""

    def stream_started(self, record: StreamRecord) -> None:
        """The stream has its model and goes upstream."""

    def attempt_started(self, attempt: AttemptStarted) -> Mapping[str, str]:
        """An upstream attempt is about to send its request: headers to add to it."""
        return NO_HEADERS

    def attempt_ended(self, attempt: AttemptRecord) -> None:
        """One upstream attempt ended (before or at the commit point)."""

    def stream_ended(self, record: StreamRecord) -> None:
        """A request is over, refused or streamed; the record is final."""


class Observers(StreamObserver):
    """Every registered observer, in order."""

    __slots__ = ("_observers",)

    def __init__(self, observers: Iterable[StreamObserver] = ()) -> None:
        self._observers = tuple(observers)

    def stream_started(self, record: StreamRecord) -> None:
        for observer in self._observers:
            observer.stream_started(record)

    def attempt_started(self, attempt: AttemptStarted) -> Mapping[str, str]:
        headers: dict[str, str] = {}
        for observer in self._observers:
            headers.update(observer.attempt_started(attempt))
        return headers

    def attempt_ended(self, attempt: AttemptRecord) -> None:
        for observer in self._observers:
            observer.attempt_ended(attempt)

    def stream_ended(self, record: StreamRecord) -> None:
        for observer in self._observers:
            observer.stream_ended(record)
