"""The load generator's check: a stream counts only when its text is exactly the fake's."""

from __future__ import annotations

import orjson

from benchmarks.loadgen import _check
from proxy.fake_upstream import reply_tokens

PROMPT = "bench-check @text=tricky @tokens=6"


def _sse(tokens: list[str]) -> bytes:
    role = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    events = [role] + [{"choices": [{"index": 0, "delta": {"content": t}}]} for t in tokens]
    body = b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events)
    return body + b"data: [DONE]\n\n"


def test_the_upstreams_exact_text_passes() -> None:
    assert _check(True, _sse(reply_tokens(PROMPT, 6)), PROMPT, 6) is None


def test_a_changed_token_in_the_upstreams_sse_is_an_error() -> None:
    tokens = reply_tokens(PROMPT, 6)
    tokens[3] = tokens[3][::-1] + "x"
    assert _check(True, _sse(tokens), PROMPT, 6) == "upstream text differs"


def test_a_missing_end_is_an_error() -> None:
    body = _sse(reply_tokens(PROMPT, 6)).removesuffix(b"data: [DONE]\n\n")
    assert _check(True, body, PROMPT, 6) == "incomplete upstream stream"


def test_the_proxys_text_must_be_exact() -> None:
    text = "".join(reply_tokens(PROMPT, 6))
    assert _check(False, text.encode(), PROMPT, 6) is None
    assert _check(False, text[:-1].encode(), PROMPT, 6) == "proxy text differs"
