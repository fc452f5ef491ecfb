"""SPEC §2: every refusal before the commit point is a JSON error with a request id."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.servers import FakeUpstreamServer, ProxyServer


async def post(proxy: ProxyServer, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        return await client.post("/v1/stream", **kwargs)  # type: ignore[arg-type]


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, str] = response.json()["error"]
    assert error["type"] == error_type
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return error


async def test_invalid_json_is_400(proxy: ProxyServer) -> None:
    response = await post(
        proxy, content=b'{"prompt": "hi"', headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")


async def test_unknown_model_is_404(proxy: ProxyServer) -> None:
    response = await post(proxy, json={"prompt": "hi", "model": "gpt-nope"})
    assert_error(response, 404, "model_not_found")


async def test_body_over_the_limit_is_413(start_proxy: Callable[..., ProxyServer]) -> None:
    proxy = start_proxy(max_body_bytes=2048)
    response = await post(proxy, json={"prompt": "x" * 4096})
    assert_error(response, 413, "body_too_large")


async def test_body_over_the_limit_without_content_length_is_413(
    start_proxy: Callable[..., ProxyServer],
) -> None:
    proxy = start_proxy(max_body_bytes=2048)

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}'

    response = await post(proxy, content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(response, 413, "body_too_large")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_body_that_is_not_json_is_415(proxy: ProxyServer, content_type: str) -> None:
    response = await post(
        proxy, content=b'{"prompt": "hi"}', headers={"Content-Type": content_type}
    )
    assert_error(response, 415, "unsupported_media_type")


async def test_json_with_charset_is_accepted(proxy: ProxyServer) -> None:
    response = await post(
        proxy,
        content=b'{"prompt": "hi"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prompt": ""},
        {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]},
        {"messages": []},
        {"prompt": 42},
        {"prompt": "hi", "max_tokens": 0},
        {"prompt": "hi", "max_tokens": "12"},
        {"prompt": "hi", "max_tokens": 10**9},
        {"prompt": "hi", "temperature": 2.5},
        {"prompt": "hi", "top_p": -0.1},
        {"prompt": "hi", "stop": "STOP"},
        {"messages": [{"role": "robot", "content": "hi"}]},
        {"messages": [{"role": "user"}]},
        ["prompt"],
    ],
)
async def test_invalid_request_is_422(proxy: ProxyServer, body: object) -> None:
    response = await post(proxy, json=body)
    assert_error(response, 422, "validation_error")


async def test_prompt_over_the_character_limit_is_422(
    start_proxy: Callable[..., ProxyServer],
) -> None:
    proxy = start_proxy(max_prompt_chars=100)
    response = await post(proxy, json={"prompt": "é" * 101})
    error = assert_error(response, 422, "validation_error")
    assert "100" in error["message"]


async def test_unknown_fields_are_ignored(proxy: ProxyServer, marker: str) -> None:
    response = await post(proxy, json={"prompt": marker, "id": "abc", "trigger": "submit"})
    assert response.status_code == 200


async def test_ai_sdk_ui_messages_are_accepted(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    messages = [
        {"id": "1", "role": "user", "parts": [{"type": "text", "text": f"hello {marker}"}]},
        {
            "id": "2",
            "role": "assistant",
            "parts": [{"type": "step-start"}, {"type": "text", "text": "hi"}],
        },
        {
            "id": "3",
            "role": "user",
            "parts": [{"type": "file", "url": "x"}, {"type": "text", "text": f"again {marker}"}],
        },
    ]
    response = await post(proxy, json={"messages": messages, "system": "be brief"})
    assert response.status_code == 200
    (record,) = upstream.find(marker)
    assert record.json["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": f"hello {marker}"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": f"again {marker}"},
    ]


async def test_upstream_error_status_is_502_when_retries_are_spent(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    response = await post(proxy, json={"prompt": f"{marker} @fault=status @status=500"})
    assert_error(response, 502, "upstream_error")
    assert len(upstream.find(marker)) == 3  # PROXY_RETRIES=2: one try and two retries


async def test_upstream_client_error_is_502_and_not_retried(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    response = await post(proxy, json={"prompt": f"{marker} @fault=status @status=400"})
    error = assert_error(response, 502, "upstream_error")
    assert "400" in error["message"]
    assert len(upstream.find(marker)) == 1


async def test_upstream_429_is_429_with_retry_after_when_retries_are_spent(
    proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    prompt = f"{marker} @fault=status @status=429 @retry_after=7"
    response = await post(proxy, json={"prompt": prompt})
    assert_error(response, 429, "upstream_rate_limited")
    assert response.headers["retry-after"] == "7"
    assert len(upstream.find(marker)) == 3


@pytest.mark.parametrize("fault", ["error-event", "malformed"])
async def test_unreadable_or_error_stream_before_text_is_502(
    proxy: ProxyServer, marker: str, fault: str
) -> None:
    response = await post(proxy, json={"prompt": f"{marker} @fault={fault} @after=0"})
    assert_error(response, 502, "upstream_protocol_error")


async def test_no_first_token_in_time_is_504(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = start_proxy(first_token_timeout=0.3)
    response = await post(proxy, json={"prompt": f"{marker} @fault=hang-before"})
    assert_error(response, 504, "upstream_timeout")
    record = await upstream.wait_disconnected(marker)  # and the upstream was let go
    assert record.disconnected_at is not None


async def test_unreachable_upstream_is_503_no_upstream_available(
    start_proxy: Callable[..., ProxyServer],
) -> None:
    proxy = start_proxy(upstream_url="http://127.0.0.1:9", retries=1)
    response = await post(proxy, json={"prompt": "hi"})
    assert_error(response, 503, "upstream_unavailable")


async def test_unknown_path_is_a_json_404(proxy: ProxyServer) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.get("/nope")
    assert_error(response, 404, "not_found")


async def test_upstream_that_never_answers_headers_is_504(
    start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer, marker: str
) -> None:
    proxy = start_proxy(first_token_timeout=0.3)
    response = await post(proxy, json={"prompt": f"{marker} @fault=hang-headers"})
    assert_error(response, 504, "upstream_timeout")
    assert (await upstream.wait_disconnected(marker)).disconnected_at is not None
