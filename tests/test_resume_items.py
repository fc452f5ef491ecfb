"""A stored stream read back as a response's items (proxy/resume/items.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator

from proxy.resume.base import StoredItem, StoredPart
from proxy.resume.items import StoredItems
from proxy.values import Done
from tests.upstream.support import Turns


async def _never_disconnects() -> dict[str, str]:
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


async def test_a_replay_that_never_waits_leaves_other_tasks_their_turn() -> None:
    # A store replays its stored text without waiting for anything: a long replay must not
    # hold the event loop (other streams, the client leaving) until it has all been written.
    async def stored() -> AsyncGenerator[StoredItem, None]:
        for index in range(100):
            yield StoredPart(f"{index} ", 0)
        yield Done()

    items = StoredItems(stored(), "request-id", _never_disconnects)
    seen = []
    texts = []
    async with Turns() as turns:
        async for item in items:
            seen.append(turns.count)
            texts.append(item)
    await items.aclose()
    assert texts == [f"{index} " for index in range(100)] + [Done()]
    assert all(before < after for before, after in itertools.pairwise(seen))
