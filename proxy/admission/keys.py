"""Client keys (PROXY_API_KEYS, PROXY_KEYS): who is asking, or 401."""

from __future__ import annotations

import hashlib
import hmac

from proxy.errors import Unauthorized
from proxy.settings import ClientKeySpec


def client_id(key: str) -> str:
    """A short, non-reversible name for a client key, fit for logs."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class ClientKeys:
    """PROXY_API_KEYS and PROXY_KEYS: the SHA-256 of a given key is compared with every
    configured key's in constant time. A named key's client is its name; a plain key's a
    short hash of it."""

    def __init__(self, keys: tuple[str, ...], named: tuple[ClientKeySpec, ...] = ()) -> None:
        self._keys = [(_digest(key), client_id(key)) for key in keys]
        self._keys += [(spec.key_sha256, spec.name) for spec in named]

    @property
    def open(self) -> bool:
        return not self._keys

    def identify(self, authorization: str | None, x_api_key: str | None) -> str | None:
        """The client of a valid key, None when the proxy is open; else Unauthorized."""
        if self.open:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else (x_api_key or "")
        digest, client = _digest(given), None
        for key, name in self._keys:  # no early exit: timing says nothing about which key
            if hmac.compare_digest(key, digest):
                client = name
        if not given or client is None:
            raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
        return client


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
