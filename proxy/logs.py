"""Logging set-up: one JSON object a line by default, or plain text for a terminal."""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any

import orjson

from proxy.settings import Settings


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        text = super().format(record)
        return " ".join([text, *(f"{key}={value}" for key, value in fields.items())])


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Each stream has its own line from its session; an access line as well would double it.
    logging.getLogger("uvicorn.access").disabled = True


class DropIncompleteResponseLog(logging.Filter):
    """uvicorn reports our deliberate aborts as an error; the stream's log line has them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


def protect_logs() -> None:
    """Log settings the app needs however logging is configured.

    httpx logs every request URL at info, and upstream URLs may carry credentials. uvicorn
    reports our deliberate aborts as an error; the session has already logged them.
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DropIncompleteResponseLog) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(DropIncompleteResponseLog())
