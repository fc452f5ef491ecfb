from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.scripted import serve  # noqa: F401  (fixture for scripted upstreams)
from tests.servers import FakeUpstreamServer, ProxyServer, proxy_settings


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstreamServer]:
    server = FakeUpstreamServer(tokens=12)
    yield server
    server.close()


@pytest.fixture(scope="session")
def every_model(upstream: FakeUpstreamServer) -> Iterator[ProxyServer]:
    """One model per dialect (tests/test_models.py's names), all at the fake upstream, with room
    for Anthropic's thinking budgets (at least 1024, below max_tokens)."""
    from proxy.settings import ModelEntry
    from tests.test_models import MODELS

    entries = tuple(
        ModelEntry(name=name, dialect=dialect, url=upstream.url, max_tokens=4096)  # type: ignore[arg-type]
        for name, (dialect, _) in MODELS.items()
    )
    server = ProxyServer(proxy_settings(upstream.url, model_list=entries))
    yield server
    server.close()


@pytest.fixture(scope="session")
def proxy(upstream: FakeUpstreamServer) -> Iterator[ProxyServer]:
    """One proxy for the tests that can share its settings."""
    server = ProxyServer(proxy_settings(upstream.url, upstream_api_key="sk-upstream-SECRET-1"))
    yield server
    server.close()


@pytest.fixture
def start_proxy(upstream: FakeUpstreamServer) -> Iterator[Callable[..., ProxyServer]]:
    """A proxy with its own settings, stopped after the test."""
    started: list[ProxyServer] = []

    def start(**overrides: Any) -> ProxyServer:
        overrides.setdefault("upstream_url", upstream.url)
        server = ProxyServer(proxy_settings(**overrides))
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def marker() -> str:
    """A word unique to this test, so the fake's records can be told apart."""
    return f"m{uuid.uuid4().hex[:12]}"
