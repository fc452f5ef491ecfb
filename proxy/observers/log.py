"""The one log line per request (SPEC §1): `stream`, with the record's fields."""

from __future__ import annotations

import logging

from proxy.observers import StreamObserver
from proxy.record import StreamRecord

logger = logging.getLogger("proxy.stream")

_QUIET = frozenset({"completed", "client_disconnected"})


class StreamLog(StreamObserver):
    def stream_ended(self, record: StreamRecord) -> None:
        level = logging.INFO if record.outcome in _QUIET else logging.WARNING
        if logger.isEnabledFor(level):
            logger.log(level, "stream", extra={"fields": record.fields()})
