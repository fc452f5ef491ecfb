"""The admission ticket (proxy/guards.py): unit tests, no server."""

from __future__ import annotations

import pytest

from proxy.errors import Overloaded, RateLimited
from proxy.guards import Guards
from tests.servers import proxy_settings


def guards(**overrides: object) -> Guards:
    return Guards(proxy_settings(None, **overrides).admission)


async def test_a_ticket_holds_a_slot_until_it_is_released_once() -> None:
    shared = guards(max_concurrent_streams=1)
    ticket = await shared.admit("client-a", "127.0.0.1")
    with pytest.raises(Overloaded):
        await shared.admit("client-b", "127.0.0.1")
    await ticket.release()
    await ticket.release()  # a second release frees nothing more
    assert shared.slots.open == 0
    again = await shared.admit("client-b", "127.0.0.1")
    assert shared.slots.open == 1
    await again.release()


async def test_a_refused_admission_holds_nothing() -> None:
    shared = guards(max_concurrent_streams=5, max_streams_per_key=1)
    held = await shared.admit("client-a", "127.0.0.1")
    with pytest.raises(RateLimited):
        await shared.admit("client-a", "127.0.0.1")
    assert shared.slots.open == 1  # the refused one gave its cap slot back
    await held.release()
    assert shared.slots.open == 0
    await (await shared.admit("client-a", "127.0.0.1")).release()
