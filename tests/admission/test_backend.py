"""What admission's Redis pieces share (proxy/admission/backend.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from proxy.admission.backend import STORE_ERRORS, ThrottledWarning, Undos, bounded, connect
from tests.servers import proxy_settings


async def test_a_call_slower_than_the_bound_is_a_store_error() -> None:
    with pytest.raises(STORE_ERRORS):
        await bounded(0.01, asyncio.sleep(1))
    assert await bounded(1, asyncio.sleep(0, "done")) == "done"


def test_the_warning_is_written_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    warn = ThrottledWarning(logging.getLogger("proxy.test-backend"))
    with caplog.at_level(logging.WARNING, "proxy.test-backend"):
        for _ in range(3):
            warn(ConnectionError(), "store down while %s", "testing")
    assert [record.getMessage() for record in caplog.records] == ["store down while testing"]


async def test_undos_run_in_the_background_and_a_failed_one_is_told() -> None:
    failures: list[BaseException] = []
    ran: list[str] = []
    undos = Undos(failures.append)

    async def undo() -> None:
        ran.append("undo")

    async def failing() -> None:
        raise ConnectionError

    undos.later(undo)
    undos.later(failing)
    await undos.aclose()
    assert ran == ["undo"]
    assert [type(failure) for failure in failures] == [ConnectionError]


def test_no_redis_url_is_no_connection() -> None:
    assert connect(proxy_settings(None).admission) is None
