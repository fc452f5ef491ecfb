"""Token usage as each dialect's parser reads it: a value beside the text, never text itself."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.conversation import Conversation, Message
from proxy.dialects import get_dialect
from proxy.values import Usage
from tests.splits import cuts, split_at, text_of, token_text
from tests.test_dialects import STREAMS, model, sse


def openai_usage(prompt: int, completion: int) -> bytes:
    counts = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return sse({"id": "x", "choices": [], "usage": counts})


def finish(dialect: str) -> bytes:
    if dialect == "openai":
        return sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None})
    return sse({"choices": [{"text": "", "index": 0, "finish_reason": "stop"}], "usage": None})


def with_usage(dialect: str, tokens: list[str], prompt: int, completion: int) -> bytes:
    """The dialect's stream of tokens, its usage in the API's own shape."""
    body = STREAMS[dialect](tokens, end=False)
    if dialect.startswith("openai"):
        return body + finish(dialect) + openai_usage(prompt, completion) + b"data: [DONE]\n\n"
    if dialect == "ollama":
        last = {"message": {"role": "assistant", "content": ""}, "done": True}
        counts = {"prompt_eval_count": prompt, "eval_count": completion}
        return body + orjson.dumps({**last, **counts}) + b"\n"
    if dialect == "tgi":
        details = {"finish_reason": "eos_token", "generated_tokens": completion, "seed": None}
        final = {
            "token": {"id": 2, "text": "</s>", "special": True},
            "generated_text": "".join(tokens),
            "details": details,
        }
        return body + sse(final, space=False)
    start = sse({"type": "message_start", "message": {"id": "m"}}, "message_start")
    message = {"id": "m", "usage": {"input_tokens": prompt, "output_tokens": 1}}
    body = body.replace(start, sse({"type": "message_start", "message": message}, "message_start"))
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": completion},
    }
    return body + sse(delta, "message_delta") + sse({"type": "message_stop"}, "message_stop")


# TGI's stream counts generated tokens only.
EXPECTED_PROMPT = {"openai": 7, "openai-completions": 7, "ollama": 7, "tgi": None, "anthropic": 7}


def parse_usage(dialect: str, pieces: list[bytes]) -> tuple[str, bool, Usage]:
    parser = get_dialect(dialect).parser(1_048_576)
    reads = [parser.feed(piece) for piece in pieces] + [parser.close()]
    assert all(failure is None for _, failure in reads)
    return "".join(text_of(parts) for parts, _ in reads), parser.complete, parser.usage


@pytest.mark.parametrize("dialect", STREAMS)
@given(tokens=st.lists(token_text, max_size=10), cut_points=cuts)
def test_usage_and_the_same_text_for_any_split(
    dialect: str, tokens: list[str], cut_points: list[int]
) -> None:
    stream = with_usage(dialect, tokens, prompt=7, completion=11)
    text, complete, usage = parse_usage(dialect, split_at(stream, cut_points))
    assert (text, complete) == ("".join(tokens), True)
    assert usage == Usage(EXPECTED_PROMPT[dialect], 11)


@pytest.mark.parametrize("dialect", STREAMS)
def test_no_usage_reported_gives_none_and_no_error(dialect: str) -> None:
    text, complete, usage = parse_usage(dialect, [STREAMS[dialect](["a", "b"])])
    assert (text, complete) == ("ab", True)
    assert usage == Usage(None, None)


@pytest.mark.parametrize("dialect", ["openai", "openai-completions"])
def test_a_usage_only_chunk_is_not_text(dialect: str) -> None:
    """So it can never be taken for the first token, the commit point."""
    parser = get_dialect(dialect).parser(1_048_576)
    assert parser.feed(openai_usage(3, 4)) == ([], None)
    assert parser.usage == Usage(3, 4)


@pytest.mark.parametrize(
    "counts",
    [
        {"prompt_tokens": "7", "completion_tokens": -1},
        {"prompt_tokens": True, "completion_tokens": 1.5},
        "lots",
        [1, 2],
    ],
)
def test_counts_that_are_not_counts_are_ignored(counts: object) -> None:
    parser = get_dialect("openai").parser(1_048_576)
    body = STREAMS["openai"](["a"], end=False) + finish("openai")
    body += sse({"choices": [], "usage": counts}) + b"data: [DONE]\n\n"
    assert parser.feed(body) == (["a"], None)
    assert parser.complete
    assert parser.usage == Usage(None, None)


@pytest.mark.parametrize("dialect", ["openai", "openai-completions", "tgi"])
def test_usage_is_not_asked_for_when_the_model_says_so(dialect: str) -> None:
    conversation = Conversation(messages=(Message("user", "hi"),))
    quiet = model(dialect).model_copy(update={"stream_usage": False})
    asked = get_dialect(dialect).build_request(model(dialect), conversation).json
    not_asked = get_dialect(dialect).build_request(quiet, conversation).json
    assert "stream_options" in asked or asked["parameters"] == {"details": True}
    assert "stream_options" not in not_asked
    assert "details" not in not_asked.get("parameters", {})
