"""The one rule for the ids a client may choose: request ids, stream ids, chat ids."""

from __future__ import annotations

import os
import re

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
