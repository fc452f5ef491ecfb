"""The one URL sanitiser: what of an upstream's URL may be logged or labelled."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(slots=True, frozen=True)
class PublicURL:
    """A base URL without user info or query, where credentials hide."""

    url: str  # scheme://host[:port]/path, for log lines
    label: str  # host:port, for metric labels

    @classmethod
    def of(cls, url: str) -> PublicURL:
        parsed = httpx.URL(url)
        port = f":{parsed.port}" if parsed.port else ""
        default_port = 443 if parsed.scheme == "https" else 80
        return cls(
            url=f"{parsed.scheme}://{parsed.host}{port}{parsed.path.rstrip('/')}",
            label=f"{parsed.host}:{parsed.port or default_port}",
        )
