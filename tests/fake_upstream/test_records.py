"""A recording fake keeps every request it received, in order, and what became of it."""

from __future__ import annotations

import httpx
import orjson

from proxy.fake_upstream import RecordingFakeUpstream
from tests.fake_upstream.readers import CHAT, post


async def test_records_the_request_as_received(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient, marker: str
) -> None:
    body = CHAT.request(marker)
    await client.post(CHAT.path, json=body, headers={"Authorization": "Bearer sk-test"})
    (record,) = fake.find(marker)
    assert (record.method, record.path, record.prompt) == ("POST", CHAT.path, marker)
    assert record.headers["authorization"] == "Bearer sk-test"
    assert record.json == body
    assert orjson.loads(record.body) == body
    assert record.finished_at is not None
    assert record.received_at <= record.finished_at


async def test_keeps_every_request_in_arrival_order(
    fake: RecordingFakeUpstream, client: httpx.AsyncClient, marker: str
) -> None:
    for word in ("first", "second", "third"):
        await post(client, CHAT, f"{marker} {word}")
    assert [record.prompt for record in fake.records] == [
        f"{marker} first",
        f"{marker} second",
        f"{marker} third",
    ]
