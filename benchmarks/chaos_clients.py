"""The chaos soak's clients: one request of each kind of the mix, and what its client saw.

Prompts carry the fake upstream's directives (proxy/fake_upstream/directives.py), so the
expected text of each is `reply_text(prompt)`.
"""

from __future__ import annotations

import asyncio
import codecs
import time
from dataclasses import dataclass, field

import httpx
import orjson

from benchmarks.chaos_judge import Ending, Outcome
from proxy.fake_upstream import reply_text

PROMPTS = {
    "exact": "@tokens=40 @delay=0.01",
    "utf8": "@text=tricky @tokens=40 @delay=0.01",
    "split": "@text=tricky @tokens=30 @split=3",
    "abandoned": "@tokens=200 @delay=0.02",
    "failing": "@tokens=40 @delay=0.01 @fault=drop-mid @after=5",
    "resumable": "@text=tricky @tokens=60 @delay=0.02",
}
MIX = tuple(PROMPTS)
SSE = "text/event-stream"


@dataclass(slots=True)
class Kills:
    """When replicas were killed, and back: a stream open across a kill may be cut."""

    spans: list[list[float]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.spans)

    def note(self, at: float) -> None:
        self.spans.append([at, float("inf")])

    def note_back(self, at: float) -> None:
        self.spans[-1][1] = at

    def during(self, began: float, ended: float) -> bool:
        return any(killed <= ended and began <= back for killed, back in self.spans)


@dataclass(slots=True)
class Seen:
    text: str = ""
    ending: Ending = "clean"


def _error_ending(status: int, body: bytes) -> Ending:
    try:
        error = orjson.loads(body)["error"]
        return "json-error" if isinstance(error, dict) and "type" in error else "http-error"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "http-error"  # nginx's own page for a replica that died before answering


async def raw_stream(
    client: httpx.AsyncClient, prompt: str, headers: dict[str, str], started: asyncio.Event
) -> Seen:
    seen, decoder = Seen(), codecs.getincrementaldecoder("utf-8")("replace")
    try:
        async with client.stream(
            "POST", "/v1/stream", json={"prompt": prompt}, headers=headers
        ) as r:
            if r.status_code != 200:
                seen.ending = _error_ending(r.status_code, await r.aread())
                return seen
            async for chunk in r.aiter_raw():
                seen.text += decoder.decode(chunk)
                started.set()
                if "@abandon" in headers.get("x-chaos", "") and seen.text:
                    seen.ending = "abandoned"
                    return seen
            seen.text += decoder.decode(b"", final=True)
    except httpx.TimeoutException:
        seen.ending = "hang"
    except httpx.TransportError:
        seen.ending = "abort"
    finally:
        started.set()
    return seen


def _sse_seen(body: bytes, cut: bool) -> Seen:
    events = []
    for block in body.decode(errors="replace").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in fields:
            events.append(fields)
    text = "".join(orjson.loads(e["data"])["text"] for e in events if e["event"] == "delta")
    last = events[-1]["event"] if events else None
    if last == "error":
        return Seen(text, "error-event")
    if last == "done" and not cut:
        return Seen(text, "clean")
    return Seen(text, "cut")


async def sse_resume(client: httpx.AsyncClient, stream_id: str, key: str) -> Seen:
    headers = {"Authorization": f"Bearer {key}", "Accept": SSE}
    body = b""
    try:
        async with client.stream("GET", f"/v1/stream/{stream_id}", headers=headers) as r:
            if r.status_code != 200:
                return Seen("", _error_ending(r.status_code, await r.aread()))
            async for chunk in r.aiter_raw():
                body += chunk
    except httpx.TimeoutException:
        return Seen(_sse_seen(body, True).text, "hang")
    except httpx.TransportError:
        return _sse_seen(body, cut=True)
    return _sse_seen(body, cut=False)


async def one_request(
    client: httpx.AsyncClient, kind: str, tag: str, key: str, kills: Kills
) -> list[Outcome]:
    """One request of the mix (two responses for a resumable one: its own and a resume)."""
    prompt = f"chaos-{tag} {PROMPTS[kind]}"
    expected = reply_text(prompt)
    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": f"chaos-{tag}"}
    if kind == "abandoned":
        headers["x-chaos"] = "@abandon"
    began, started = time.monotonic(), asyncio.Event()
    own = asyncio.create_task(raw_stream(client, prompt, headers, started))
    resumed = None
    if kind == "resumable":
        await started.wait()
        resumed = await sse_resume(client, f"chaos-{tag}", key)
    seen = await own
    killed = kills.during(began, time.monotonic())
    failing = kind == "failing"
    outcomes = [Outcome(kind, expected, seen.text, seen.ending, failing, killed)]
    if resumed is not None:
        outcomes.append(Outcome("resume", expected, resumed.text, resumed.ending, False, killed))
    return outcomes
