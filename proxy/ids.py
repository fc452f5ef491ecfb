"""The one rule for the ids a client may choose: request ids, stream ids, chat ids."""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from typing import Any

# What an X-Request-ID, a resumable stream's id and a chat's id may be: safe in a log line,
# a Redis key and a URL path step.
ID_PATTERN = r"[A-Za-z0-9._:-]{1,128}"
_is_id = re.compile(ID_PATTERN).fullmatch


def sane_id(value: str | None) -> str | None:
    """`value` when it is a usable id, else None."""
    return value if value and _is_id(value) and value not in (".", "..") else None


def new_id() -> str:
    return os.urandom(16).hex()


def request_id(given: str | None) -> str:
    """The client's X-Request-ID when it is sane, else a fresh one."""
    return sane_id(given) or new_id()


# Where a request's id is kept in its ASGI scope, derived once (ProxyApp, app.py), and the
# client's own X-Request-ID when it sent a sane one (a resumable stream's default id).
REQUEST_ID = "proxy.request_id"
GIVEN_REQUEST_ID = "proxy.given_request_id"


def request_id_in(scope: MutableMapping[str, Any]) -> str:
    """The request's id: derived from its X-Request-ID the first time, then kept in `scope`."""
    found: str | None = scope.get(REQUEST_ID)
    if found is not None:
        return found
    given = next(
        (
            value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name == b"x-request-id"
        ),
        None,
    )
    scope[GIVEN_REQUEST_ID] = given = sane_id(given)
    scope[REQUEST_ID] = found = given or new_id()
    return found
