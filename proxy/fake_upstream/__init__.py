"""A fake of every upstream dialect, on a real socket, with faults on demand.

It is the proxy's built-in default upstream (a friendly reply that says what it is), the test
suite's and the benchmark's (the tricky text, by directive). Prompts steer it with `@name=value`
directives (see `directives`).

    directives.py   what a prompt can ask for: text, length, thinking, calls, pace, faults
    replies.py      the friendly reply, the tricky text and the reasoning, token by token
    calls.py        the tool calls: their arguments, fragments and ids, and the answer to results
    formats/        one module per upstream API's wire format
    request.py      `FakeRequest`: one request as received, and what became of it
    answers.py      the answer to one request: a probe's, an error, or a streamed reply
    server.py       the HTTP/1.1 server (`FakeUpstream`), which keeps nothing per request
    records.py      `RecordingFakeUpstream`: keeps every request, for tests
"""

from proxy.fake_upstream.calls import (
    TEXT_BEFORE_CALL,
    tool_answer_text,
    tool_call_arguments,
    tool_call_fragments,
    tool_call_id,
    tool_call_input,
)
from proxy.fake_upstream.directives import Directives, Fault
from proxy.fake_upstream.records import RecordingFakeUpstream
from proxy.fake_upstream.replies import (
    THOUGHTS,
    VOCABULARY,
    friendly_text,
    prompt_tokens,
    reasoning_text,
    reasoning_tokens,
    reply_text,
    reply_tokens,
)
from proxy.fake_upstream.request import FakeRequest
from proxy.fake_upstream.server import FakeUpstream, serve_fake_upstream

__all__ = [
    "TEXT_BEFORE_CALL",
    "THOUGHTS",
    "VOCABULARY",
    "Directives",
    "FakeRequest",
    "FakeUpstream",
    "Fault",
    "RecordingFakeUpstream",
    "friendly_text",
    "prompt_tokens",
    "reasoning_text",
    "reasoning_tokens",
    "reply_text",
    "reply_tokens",
    "serve_fake_upstream",
    "tool_answer_text",
    "tool_call_arguments",
    "tool_call_fragments",
    "tool_call_id",
    "tool_call_input",
]
