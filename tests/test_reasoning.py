"""Thinking models over real sockets (issue 26, SPEC §5g): the deadlines count reasoning as
progress, and every format carries the thoughts (raw text excepted) before the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from proxy.fake_upstream import reasoning_text, reply_text
from proxy.settings import ModelEntry
from tests.servers import FakeUpstreamServer, ProxyServer
from tests.test_chat import chat_body
from tests.test_formats import sse_events
from tests.test_metrics import scrape_when, stream_lines
from tests.test_models import models_proxy  # noqa: F401  (fixture)
from tests.test_operations import log_lines  # noqa: F401  (fixture)
from tests.test_output_formats import NDJSON, SSE, events_of

# The dialects that have reasoning, by their model's name in tests/test_models.py.
THINKING_MODELS = ("chat", "llama", "claude")


async def post(
    proxy: ProxyServer, body: dict[str, Any], accept: str = "*/*", path: str = "/v1/stream"
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
        return await client.post(path, json=body, headers={"Accept": accept})


def channel(events: list[dict[str, Any]], kind: str) -> str:
    return "".join(event["data"]["text"] for event in events if event["event"] == kind)


# --- the deadlines ------------------------------------------------------------------------


@pytest.mark.parametrize("accept", ["text/plain", SSE])
async def test_a_thinking_phase_longer_than_the_first_token_timeout_is_not_cut(
    start_proxy: Callable[..., ProxyServer], marker: str, accept: str
) -> None:
    proxy = start_proxy(first_token_timeout=0.5, idle_timeout=1.0)
    # 15 thoughts 0.1 s apart: 1.5 s of thinking, three times the first-token timeout.
    prompt = f"{marker} @think=15 @delay=0.1 @tokens=5"
    response = await post(proxy, {"prompt": prompt}, accept)
    assert response.status_code == 200
    if accept == SSE:
        events = sse_events(response.content)
        assert channel(events, "reasoning") == reasoning_text(prompt, 15)
        assert channel(events, "delta") == reply_text(prompt, 5)
    else:
        assert response.text == reply_text(prompt, 5)


async def test_a_thinking_phase_on_the_openai_route_is_not_cut(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(first_token_timeout=0.5, idle_timeout=1.0)
    prompt = f"{marker} @think=15 @delay=0.1 @tokens=5"
    body = {"model": "default", "messages": [{"role": "user", "content": prompt}]}
    response = await post(proxy, body, path="/v1/chat/completions")
    assert response.status_code == 200
    message = response.json()["choices"][0]["message"]
    assert message["reasoning_content"] == reasoning_text(prompt, 15)
    assert message["content"] == reply_text(prompt, 5)


async def test_a_silent_upstream_still_times_out_at_the_first_token_deadline(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(first_token_timeout=0.5, idle_timeout=5.0)
    response = await post(proxy, {"prompt": f"{marker} @fault=hang-before"})
    assert response.status_code == 504
    assert response.json()["error"]["message"] == "no first token from upstream within 0.5 s"


async def test_an_idle_gap_inside_the_thinking_trips_the_idle_deadline(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    """Raw text: the status line waits for the answer, so the gap is a 504 with its reason."""
    proxy = start_proxy(first_token_timeout=0.5, idle_timeout=0.5)
    prompt = f"{marker} @think=4 @delay=0.05 @think_gap=30"
    response = await post(proxy, {"prompt": prompt})
    assert response.status_code == 504
    assert response.json()["error"]["message"] == "no text from upstream for 0.5 s"
    await upstream.wait_disconnected(marker)


async def test_an_idle_gap_inside_the_thinking_ends_a_framed_stream_with_an_error(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    """SSE: committed at the first thought, the gap is an error event after the thoughts."""
    proxy = start_proxy(first_token_timeout=0.5, idle_timeout=0.5)
    prompt = f"{marker} @think=4 @delay=0.05 @think_gap=30"
    response = await post(proxy, {"prompt": prompt}, SSE)
    assert response.status_code == 200
    events = sse_events(response.content)
    assert channel(events, "reasoning") == reasoning_text(prompt, 2)  # the gap is after half
    assert events[-1]["event"] == "error"
    assert events[-1]["data"]["error"]["type"] == "upstream_timeout"


# --- every format --------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [SSE, NDJSON])
@pytest.mark.parametrize("model", THINKING_MODELS)
async def test_sse_and_ndjson_carry_the_reasoning_then_the_text_exactly(
    models_proxy: ProxyServer,  # noqa: F811
    marker: str,
    model: str,
    accept: str,
) -> None:
    prompt = f"{marker} @think=9 @text=tricky @tokens=20 @split=3"
    response = await post(models_proxy, {"model": model, "prompt": prompt}, accept)
    events = events_of(accept, response.content)
    kinds = [event["event"] for event in events]
    assert kinds == ["reasoning"] * kinds.count("reasoning") + ["delta"] * kinds.count("delta") + [
        "done"
    ]
    assert channel(events, "reasoning") == reasoning_text(prompt, 9)
    assert channel(events, "delta") == reply_text(prompt, 20)
    # Offsets count both channels in the stream's order, each event's the end of its text.
    offsets = [int(event["id"]) for event in events[:-1]]
    lengths = [len(event["data"]["text"]) for event in events[:-1]]
    assert offsets == [sum(lengths[: index + 1]) for index in range(len(lengths))]
    assert int(events[-1]["id"]) == len(reasoning_text(prompt, 9) + reply_text(prompt, 20))


@pytest.mark.parametrize("model", THINKING_MODELS)
async def test_raw_text_carries_the_answer_alone(
    models_proxy: ProxyServer,  # noqa: F811
    marker: str,
    model: str,
) -> None:
    prompt = f"{marker} @think=9 @text=tricky @tokens=20"
    response = await post(models_proxy, {"model": model, "prompt": prompt})
    assert response.status_code == 200
    assert response.text == reply_text(prompt, 20)


@pytest.mark.parametrize("model", THINKING_MODELS)
async def test_the_ui_message_stream_has_a_reasoning_part_before_the_text_part(
    models_proxy: ProxyServer,  # noqa: F811
    marker: str,
    model: str,
) -> None:
    prompt = f"{marker} @think=6 @tokens=8"
    body = {**chat_body(marker, prompt), "model": model}
    response = await post(models_proxy, body, path="/v1/chat")
    assert response.status_code == 200, response.text
    events = sse_events(response.content)
    parts = [e["data"] for e in events if e["data"] != "[DONE]"]
    types = [part["type"] for part in parts]
    assert types[:3] == ["start", "start-step", "reasoning-start"]
    assert types.index("reasoning-end") < types.index("text-start")
    reasoning = [p for p in parts if p["type"] == "reasoning-delta"]
    text = [p for p in parts if p["type"] == "text-delta"]
    assert "".join(p["delta"] for p in reasoning) == reasoning_text(prompt, 6)
    assert "".join(p["delta"] for p in text) == reply_text(prompt, 8)
    assert len({p["id"] for p in reasoning} | {p["id"] for p in text}) == 2
    assert types[-2:] == ["finish-step", "finish"]


@pytest.mark.parametrize("model", THINKING_MODELS)
async def test_chat_completion_chunks_carry_reasoning_content_only_where_there_is_some(
    models_proxy: ProxyServer,  # noqa: F811
    marker: str,
    model: str,
) -> None:
    prompt = f"{marker} @think=6 @tokens=8"
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True}
    response = await post(models_proxy, body, path="/v1/chat/completions")
    chunks = [e["data"] for e in sse_events(response.content) if e["data"] != "[DONE]"]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    with_reasoning = [delta for delta in deltas if "reasoning_content" in delta]
    assert all(
        isinstance(d["reasoning_content"], str) and d["reasoning_content"] for d in with_reasoning
    )
    assert all("content" not in delta for delta in with_reasoning)
    assert "".join(d["reasoning_content"] for d in with_reasoning) == reasoning_text(prompt, 6)
    assert "".join(d.get("content") or "" for d in deltas) == reply_text(prompt, 8)


async def test_asking_for_reasoning_reaches_the_upstream_in_its_dialect(
    models_proxy: ProxyServer,  # noqa: F811
    upstream: FakeUpstreamServer,
    marker: str,
) -> None:
    asked = {"chat": ("reasoning_effort", "low"), "llama": ("think", True)}
    for model, (field, value) in asked.items():
        prompt = f"{marker}-{model} @tokens=3"
        response = await post(
            models_proxy, {"model": model, "prompt": prompt, "reasoning": "low"}, SSE
        )
        assert channel(sse_events(response.content), "reasoning") == reasoning_text(prompt, 4)
        sent = (await upstream.wait_received(f"{marker}-{model}")).json
        assert sent[field] == value
    prompt = f"{marker}-claude @tokens=3"
    await post(
        models_proxy,
        {"model": "claude", "prompt": prompt, "reasoning": "minimal", "max_tokens": 400},
        SSE,
    )
    sent = (await upstream.wait_received(f"{marker}-claude")).json
    assert sent["thinking"] == {"type": "disabled"}  # no room for the least budget under 400


# --- resume --------------------------------------------------------------------------------


async def test_a_resumed_sse_stream_replays_the_reasoning_from_any_offset(
    start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(resume=True)
    prompt = f"{marker} @think=8 @text=tricky @tokens=10"
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        first = await client.post(
            "/v1/stream", json={"prompt": prompt}, headers={"Accept": SSE, "X-Request-ID": marker}
        )
        events = sse_events(first.content)
        thoughts, answer = reasoning_text(prompt, 8), reply_text(prompt, 10)
        for offset in (0, 3, len(thoughts), len(thoughts) + 4):
            again = await client.get(
                f"/v1/stream/{marker}", params={"offset": offset}, headers={"Accept": SSE}
            )
            replayed = sse_events(again.content)
            whole = (thoughts + answer)[offset:]
            assert channel(replayed, "reasoning") + channel(replayed, "delta") == whole
            assert replayed[-1] == events[-1]
        # Raw text counts the answer alone: offset 4 is the answer's fifth character.
        raw = await client.get(f"/v1/stream/{marker}", params={"offset": 4})
        assert raw.text == answer[4:]


# --- what operators see ----------------------------------------------------------------------


async def test_the_log_line_and_metrics_count_reasoning_apart_and_never_show_it(
    start_proxy: Callable[..., ProxyServer],
    marker: str,
    log_lines: list[str],  # noqa: F811
) -> None:
    proxy = start_proxy()
    prompt = f"{marker} @think=6 @delay=0.02 @tokens=5"
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post(
            "/v1/stream", json={"prompt": prompt}, headers={"X-Request-ID": marker}
        )
        assert response.text == reply_text(prompt, 5)
    result = await scrape_when(
        proxy, lambda s: s.value("llm_proxy_stream_deltas_total", kind="reasoning") > 0
    )
    assert result.value("llm_proxy_stream_deltas_total", kind="reasoning") == 6
    assert result.value("llm_proxy_stream_deltas_total", kind="text") == 5
    assert result.value("llm_proxy_time_to_first_part_seconds_count") == 1
    assert result.value("llm_proxy_time_to_first_text_seconds_count") == 1
    (line,) = stream_lines(log_lines, marker)
    assert line["reasoning_deltas"] == 6
    assert line["reasoning_bytes"] == len(reasoning_text(prompt, 6).encode())
    assert 0 < line["first_part_ms"] < line["first_text_ms"]  # six thoughts 20 ms apart first
    assert not any(thought in "".join(log_lines) for thought in ("café", "🤔"))


async def test_a_models_default_effort_is_asked_for_unless_the_request_asks(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    entry = ModelEntry(name="thinker", dialect="openai", url=upstream.url, reasoning="high")
    proxy = start_proxy(model_list=(entry,))
    await post(proxy, {"prompt": f"{marker}-default @tokens=2"}, SSE)
    assert (await upstream.wait_received(f"{marker}-default")).json["reasoning_effort"] == "high"
    await post(proxy, {"prompt": f"{marker}-asked @tokens=2", "reasoning": "none"}, SSE)
    assert (await upstream.wait_received(f"{marker}-asked")).json["reasoning_effort"] == "none"
