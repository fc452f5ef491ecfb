"""What the fake says: a short friendly reply by default, the tricky text on demand, and
the reasoning that precedes either when a request thinks.

The friendly reply tells a first-time user what answered them (the built-in fake, echoing a few
words of their prompt) and how to reach a real API. The tricky text (`@text=tricky`) is what
the proxy's tests need: every line break a decoder could mistake, `data:` lookalikes, quotes
and backslashes, and characters of every UTF-8 length. Both are deterministic: the same
prompt always gets the same text. The reasoning (`THOUGHTS`, cycled) is plain words with
characters of two, three and four UTF-8 bytes among its first four tokens, so a split of the
shortest thinking reply still cuts through them; it never reads like either reply.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator

from proxy.fake_upstream.directives import Directives, Text, without_directives

VOCABULARY: tuple[str, ...] = (
    "Hello",
    " world",
    ",",
    " the",
    " quick",
    " brown",
    " fox",
    " jumps",
    ".",
    "\n",
    " é",
    "ß",
    " ñ",
    " 世界",
    " €",
    "‽",
    " 🙂",
    "𝄞",
    " 🚀",
    "\r\n",
    "\u2028",
    "\u0085",
    "\x0c",
    ' "quoted\\"',
    ":",
    "data: ",
    "\r",
    " over",
    " lazy",
    " dog",
    " café",
    " naïve",
    " 日本語",
    " ✓",
    " Ω",
    " 🤖",
    "\t",
    " end",
    "!",
    " ok",
)

THOUGHTS: tuple[str, ...] = (
    "Thinking",
    " →",
    " café",
    " 🤔",
    "\n",
    "First",
    ",",
    " what",
    " was",
    " asked",
    ";",
    " then",
    " an",
    " answer",
    " …",
    "\n",
)

_ECHO_WORDS = 8
_ECHO_CHARACTERS = 80
_WORD = re.compile(r"\s*\S+")
_PIECE = re.compile(r"\s*\S+|\s+")  # words, and the whitespace after the last


def friendly_text(prompt: str) -> str:
    words = without_directives(prompt).split()
    echo = " ".join(words[:_ECHO_WORDS])
    if len(words) > _ECHO_WORDS or len(echo) > _ECHO_CHARACTERS:
        echo = echo[:_ECHO_CHARACTERS] + " …"
    heard = f"You said: “{echo}”" if echo else "Your prompt had no words."
    return (
        "Hello! This is the built-in fake upstream of llm-stream-proxy, not a model.\n"
        f"{heard}\n"
        "To talk to a real model, set PROXY_UPSTREAM_URL to its API's base URL "
        "(with PROXY_UPSTREAM_API_KEY, and PROXY_UPSTREAM_DIALECT unless it speaks OpenAI's "
        "chat API), then restart the proxy. The README lists every setting.\n"
    )


class Reply:
    """One reply, made token by token: a reply of millions of tokens starts at once."""

    __slots__ = ("_friendly", "_seed", "total")

    def __init__(self, prompt: str, text: Text, count: int | None) -> None:
        if text == "tricky":
            self._friendly: list[str] = []
            self._seed = zlib.crc32(prompt.encode())
            whole = len(VOCABULARY)
        else:
            # Word by word, each with the whitespace before it, as models stream.
            self._friendly = [*_WORD.findall(friendly_text(prompt)), "\n"]
            self._seed = 0
            whole = len(self._friendly)
        self.total = whole if count is None else count

    @classmethod
    def saying(cls, text: str) -> Reply:
        """A reply of exactly text, word by word: an answer to tool results, or what a
        reply says before it calls."""
        reply = cls("", "friendly", None)
        reply._friendly = _PIECE.findall(text)
        reply.total = len(reply._friendly)
        return reply

    def tokens(self, start: int, stop: int) -> Iterator[str]:
        """Tokens start to stop; past its end the friendly reply starts over."""
        if self._friendly:
            words = self._friendly
            return (words[i % len(words)] for i in range(start, stop))
        size, seed = len(VOCABULARY), self._seed
        return (VOCABULARY[(seed + i * 7) % size] for i in range(start, stop))


def prompt_tokens(prompt: str) -> int:
    """The prompt's length in tokens as the fake reports it: its words, directives included."""
    return max(1, len(prompt.split()))


def reply_tokens(prompt: str, count: int | None = None) -> list[str]:
    """The fake's reply to prompt, token by token: count tokens, or (None) what a fake
    without a `tokens` default sends: `@tokens=N` if the prompt says, else the whole reply."""
    directives = Directives.parse(prompt, tokens=None, delay=0)
    reply = Reply(prompt, directives.text, directives.tokens if count is None else count)
    return list(reply.tokens(0, reply.total))


def reply_text(prompt: str, count: int | None = None) -> str:
    return "".join(reply_tokens(prompt, count))


def thoughts(start: int, stop: int) -> Iterator[tuple[int, str]]:
    """Reasoning tokens start to stop, with their indices, `THOUGHTS` over and over."""
    return ((i, THOUGHTS[i % len(THOUGHTS)]) for i in range(start, stop))


def reasoning_tokens(prompt: str, count: int) -> list[str]:
    """The fake's reasoning before its reply to prompt, count tokens of it. It is the same for
    every prompt today; a test asks for it as for `reply_tokens`, so it need not know that."""
    return [token for _, token in thoughts(0, count)]


def reasoning_text(prompt: str, count: int) -> str:
    return "".join(reasoning_tokens(prompt, count))
