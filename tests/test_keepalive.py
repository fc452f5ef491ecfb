"""Keep-alive pings on a waiting framed stream (issue 13), with a recording ASGI `send`."""

from __future__ import annotations

import asyncio

from starlette.types import Message

from proxy.keepalive import KeepAlive

PING = b": ping\n\n"


class RecordingSend:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.arrived = asyncio.Event()
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.concurrent = 0
        self.most_concurrent = 0

    async def __call__(self, message: Message) -> None:
        self.started.set()
        self.concurrent += 1
        self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            await self.release.wait()  # a slow client: the write takes a while
            self.bodies.append(message["body"])
            self.arrived.set()
        finally:
            self.concurrent -= 1

    async def next_body(self) -> bytes:
        async with asyncio.timeout(5):
            while True:
                self.arrived.clear()
                count = len(self.bodies)
                await self.arrived.wait()
                if len(self.bodies) > count:
                    return self.bodies[-1]


async def test_a_waiting_stream_sends_pings() -> None:
    send = RecordingSend()
    keepalive = KeepAlive(send, PING, 0.05)
    try:
        assert await send.next_body() == PING
        assert await send.next_body() == PING
    finally:
        keepalive.close()


async def test_a_write_waits_for_a_ping_in_flight_and_never_overlaps_it() -> None:
    send = RecordingSend()
    send.release.clear()  # the first ping hangs in a slow send
    keepalive = KeepAlive(send, PING, 0.05)
    try:
        async with asyncio.timeout(5):
            await send.started.wait()  # the ping's send has begun
        write = asyncio.create_task(keepalive.send(b"data"))
        await asyncio.sleep(0)
        assert not write.done()
        send.release.set()
        await write
        assert send.bodies[:2] == [PING, b"data"]
        assert send.most_concurrent == 1
    finally:
        keepalive.close()


async def test_empty_writes_send_nothing() -> None:
    send = RecordingSend()
    keepalive = KeepAlive(send, b"", 0.01)  # and no ping is no keep-alive
    try:
        await keepalive.send(b"")
        await keepalive.send(b"x")
        await keepalive.send(b"y")
        assert send.bodies == [b"x", b"y"]
    finally:
        keepalive.close()
