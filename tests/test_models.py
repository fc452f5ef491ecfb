"""Every dialect end to end, and one proxy routing several models (PROXY_MODELS)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from proxy.fake_upstream import reply_text
from proxy.settings import ModelEntry
from tests.servers import FakeUpstreamServer, ProxyServer, proxy_settings
from tests.test_stream import read_until_aborted

# model name → (dialect, the upstream path that dialect must call)
MODELS = {
    "chat": ("openai", "/v1/chat/completions"),
    "legacy": ("openai-completions", "/v1/completions"),
    "llama": ("ollama", "/api/chat"),
    "hf": ("tgi", "/generate_stream"),
    "claude": ("anthropic", "/v1/messages"),
}
KEY = "sk-models-SECRET"


@pytest.fixture(scope="module")
def models_proxy(upstream: FakeUpstreamServer) -> Iterator[ProxyServer]:
    entries = tuple(
        ModelEntry(
            name=name,
            dialect=dialect,  # type: ignore[arg-type]
            url=upstream.url,
            api_key=KEY,  # type: ignore[arg-type]
            upstream_model=f"up-{name}",
            max_tokens=500,
        )
        for name, (dialect, _) in MODELS.items()
    )
    server = ProxyServer(proxy_settings(upstream.url, model_list=entries))
    yield server
    server.close()


async def post(proxy: ProxyServer, model: str, prompt: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        return await client.post("/v1/stream", json={"model": model, "prompt": prompt})


@pytest.mark.parametrize("model", MODELS)
async def test_each_model_routes_to_its_dialect(
    models_proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str, model: str
) -> None:
    response = await post(models_proxy, model, f"{marker} @text=tricky")
    assert response.status_code == 200
    assert response.text == reply_text(f"{marker} @text=tricky", 12)
    (record,) = upstream.find(marker)
    assert record.path == MODELS[model][1]
    assert record.json["stream"] is True


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("split", [1, 7])
async def test_text_is_exact_for_any_split(
    models_proxy: ProxyServer, marker: str, model: str, split: int
) -> None:
    prompt = f"{marker} @text=tricky @tokens=30 @split={split}"
    response = await post(models_proxy, model, prompt)
    assert response.content.decode() == reply_text(prompt, 30)


@pytest.mark.parametrize("model", MODELS)
async def test_missing_end_marker_aborts(
    models_proxy: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @text=tricky @fault=no-end"
    status, text = await read_until_aborted(models_proxy, prompt, model=model)
    assert status == 200
    assert text.decode() == reply_text(prompt, 12)


@pytest.mark.parametrize("model", MODELS)
async def test_in_band_error_before_text_is_502(
    models_proxy: ProxyServer, marker: str, model: str
) -> None:
    response = await post(models_proxy, model, f"{marker} @fault=error-event @after=0")
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_protocol_error"


@pytest.mark.parametrize("model", MODELS)
async def test_in_band_error_after_text_aborts(
    models_proxy: ProxyServer, marker: str, model: str
) -> None:
    prompt = f"{marker} @text=tricky @fault=error-event @after=3"
    status, text = await read_until_aborted(models_proxy, prompt, model=model)
    assert status == 200
    assert text.decode() == reply_text(prompt, 3)


@pytest.mark.parametrize("model", MODELS)
async def test_upstream_error_status_is_502_with_its_message(
    models_proxy: ProxyServer, marker: str, model: str
) -> None:
    response = await post(models_proxy, model, f"{marker} @fault=status @status=400")
    assert response.status_code == 502
    assert "fake upstream error" in response.json()["error"]["message"]


async def test_ollama_model_not_found_is_502_with_the_upstream_message(
    models_proxy: ProxyServer, marker: str
) -> None:
    response = await post(models_proxy, "llama", f"{marker} @model_missing=1")
    assert response.status_code == 502
    assert 'model "up-llama" not found' in response.json()["error"]["message"]


async def test_upstream_requests_are_what_each_api_documents(
    models_proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    async with httpx.AsyncClient(base_url=models_proxy.url, timeout=10) as client:
        for model in MODELS:
            body = {"model": model, "prompt": f"{model} {marker}", "system": "be brief",
                    "max_tokens": 64, "temperature": 0.5}  # fmt: skip
            assert (await client.post("/v1/stream", json=body)).status_code == 200
    sent = {record.path: record for record in upstream.find(marker)}
    chat = sent["/v1/chat/completions"]
    assert chat.headers["authorization"] == f"Bearer {KEY}"
    assert chat.json == {
        "model": "up-chat",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": f"chat {marker}"},
        ],
        "stream": True,
        "max_tokens": 64,
        "temperature": 0.5,
        "stream_options": {"include_usage": True},
    }
    legacy = sent["/v1/completions"]
    assert legacy.json["prompt"] == f"be brief\n\nuser: legacy {marker}\n\nassistant:"
    assert legacy.json["max_tokens"] == 64
    ollama = sent["/api/chat"]
    assert ollama.json["model"] == "up-llama"
    assert ollama.json["options"] == {"num_predict": 64, "temperature": 0.5}
    tgi = sent["/generate_stream"]
    assert tgi.json["parameters"] == {"max_new_tokens": 64, "temperature": 0.5, "details": True}
    claude = sent["/v1/messages"]
    assert claude.headers["x-api-key"] == KEY
    assert claude.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in claude.headers
    assert claude.json["system"] == "be brief"
    assert claude.json["messages"] == [{"role": "user", "content": f"claude {marker}"}]
    assert claude.json["max_tokens"] == 64


async def test_models_endpoint_lists_names_and_dialects_only(models_proxy: ProxyServer) -> None:
    async with httpx.AsyncClient(base_url=models_proxy.url) as client:
        response = await client.get("/v1/models")
    listed = response.json()["data"]
    assert [(m["id"], m["object"], m["dialect"]) for m in listed] == [
        (name, "model", dialect) for name, (dialect, _) in MODELS.items()
    ]
    assert {m["owned_by"] for m in listed} == {"llm-stream-proxy"}
    assert all(isinstance(m["created"], int) for m in listed)
    assert KEY not in response.text
    assert "127.0.0.1" not in response.text


async def test_max_tokens_over_the_models_ceiling_is_422(models_proxy: ProxyServer) -> None:
    async with httpx.AsyncClient(base_url=models_proxy.url) as client:
        response = await client.post(
            "/v1/stream", json={"model": "claude", "prompt": "hi", "max_tokens": 501}
        )
    assert response.status_code == 422


@pytest.mark.parametrize("model", ["chat", "claude"])
async def test_upstream_error_that_echoes_the_key_is_scrubbed(
    models_proxy: ProxyServer, marker: str, model: str
) -> None:
    response = await post(models_proxy, model, f"{marker} @fault=status @status=401 @echo_auth=1")
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "credential" in message
    assert KEY not in message
    assert "**********" in message
