"""The chat page at `GET /` in real Chromium, against the proxy and the fake upstream on sockets."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Route,
    async_playwright,
    expect,
)

from tests.frontends import (
    CHROMIUM_ARGS,
    OtherOriginSite,
    proxy_answer,
    proxy_error_message,
    require_chromium,
)
from tests.servers import FakeUpstreamServer, ProxyProcess, ProxyServer, proxy_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The README's screenshot: rewritten only when asked (its timings differ on every run, and a
# test run should leave the work tree as it found it).
SCREENSHOT = Path(__file__).parent.parent / "docs" / "chat.png"
UPDATE_SCREENSHOT = os.environ.get("UPDATE_SCREENSHOTS") == "1"
# The answer's final states, as the page marks them on its <article data-state=...>.
ENDED = re.compile(r"^(done|stopped|interrupted|error)$")
# Generous: a shared, loaded machine; the fake's own delays bound how fast anything ends.
WAIT_MS = 30_000
RECORD_UPDATES = """() => {
    window.updates = [];
    const conversation = document.getElementById("conversation");
    new MutationObserver(() => {
        const answers = conversation.querySelectorAll("article.assistant .text");
        const last = answers[answers.length - 1];
        if (last) window.updates.push([performance.now(), last.textContent.length]);
    }).observe(conversation, {subtree: true, childList: true, characterData: true});
}"""


class ChatPage:
    """The page as a user drives it: by its labels and keys, reading what it shows."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console_errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    async def open(self, url: str) -> httpx.Headers:
        response = await self.page.goto(url)
        assert response is not None
        assert response.status == 200
        return httpx.Headers(await response.all_headers())

    async def send(self, prompt: str) -> None:
        await self.page.get_by_label("Message").fill(prompt)
        await self.page.get_by_label("Message").press("Enter")

    @property
    def answer(self) -> AnswerView:
        return AnswerView(self.page.locator("article.assistant").last)

    async def answer_ended(self) -> AnswerView:
        answer = self.answer
        await expect(answer.article).to_have_attribute("data-state", ENDED, timeout=WAIT_MS)
        return answer


class AnswerView:
    """The latest answer: its text, its state and the line under it."""

    def __init__(self, article: Locator) -> None:
        self.article = article

    async def state(self) -> str | None:
        return await self.article.get_attribute("data-state")

    async def text(self) -> str:
        """The answer's text exactly as the page received it (its Markdown source), once ended."""
        return await self.article.evaluate("node => node.dataset.markdown")

    async def shown(self) -> str:
        # textContent, not innerText: the characters of the rendered Markdown, no layout applied.
        return await self.article.locator(".text").evaluate("node => node.textContent")

    @property
    def rendered(self) -> Locator:
        return self.article.locator(".text")

    @property
    def thinking(self) -> Locator:
        return self.article.locator("details.thinking")

    async def meta(self) -> str:
        return await self.article.locator(".meta").inner_text()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=list(CHROMIUM_ARGS)
        )
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def chat(browser: Browser) -> AsyncIterator[ChatPage]:
    """A fresh tab in its own context: empty sessionStorage, no cache."""
    context = await browser.new_context(viewport={"width": 900, "height": 700})
    yield ChatPage(await context.new_page())
    await context.close()


@pytest.fixture
def other_origin() -> Iterator[OtherOriginSite]:
    site = OtherOriginSite()
    yield site
    site.close()


async def test_answer_arrives_in_many_updates_with_exact_text(
    chat: ChatPage, proxy: ProxyServer, marker: str
) -> None:
    # The tricky text, 40 tokens: the whole vocabulary (emoji, CJK, accents, CR/LF, U+2028).
    prompt = f"{marker} @text=tricky @tokens=40 @delay=0.03"
    expected = await proxy_answer(proxy.url, prompt)
    assert expected.completed
    assert any(ord(c) > 0xFFFF for c in expected.text), "no astral character to test"
    assert re.search(r"[\u4e00-\u9fff]", expected.text), "no CJK character to test"
    await chat.open(proxy.url)
    await chat.page.evaluate(RECORD_UPDATES)

    await chat.send(prompt)
    answer = await chat.answer_ended()

    assert await answer.state() == "done"
    assert await answer.text() == expected.text
    updates: list[tuple[float, int]] = await chat.page.evaluate("window.updates")
    growth = [(at, length) for at, length in updates if length > 0]
    lengths = sorted({length for _, length in growth})
    assert len(lengths) >= 10, f"the answer grew in {len(lengths)} steps, not token by token"
    # The fake waits 30 ms before each of 40 tokens: a page that buffered would jump at once.
    assert growth[-1][0] - growth[0][0] >= 500
    meta = await answer.meta()
    assert re.search(r"first token \d", meta), meta
    assert re.search(r"\d+ chars/s", meta), meta
    assert chat.console_errors == []


async def test_page_renders_markup_in_messages_as_text(
    chat: ChatPage, proxy: ProxyServer, marker: str
) -> None:
    prompt = f'{marker} <img src=x onerror="window.pwned = 1"> <b>bold</b>'
    await chat.open(proxy.url)
    await chat.send(prompt)
    await chat.answer_ended()

    user_text = chat.page.locator("article.user .text").last
    assert await user_text.evaluate("node => node.textContent") == prompt
    assert await chat.page.locator("#conversation img, #conversation b").count() == 0
    assert await chat.page.evaluate("window.pwned") is None


async def test_page_is_served_with_a_csp_that_blocks_inline_script_and_style(
    chat: ChatPage, proxy: ProxyServer
) -> None:
    headers = await chat.open(proxy.url)

    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "unsafe-inline" not in policy
    ran_inline = await chat.page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.inlineRan = true";
            document.body.append(script);
            const probe = document.createElement("p");
            probe.setAttribute("style", "color: rgb(1, 2, 3)");
            document.body.append(probe);
            return [window.inlineRan === true, getComputedStyle(probe).color];
        }"""
    )
    assert ran_inline[0] is False
    assert ran_inline[1] != "rgb(1, 2, 3)"


async def test_stop_closes_the_upstream_and_marks_the_answer_stopped(
    chat: ChatPage, proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    await chat.open(proxy.url)
    await chat.send(f"{marker} @tokens=2000 @delay=0.05")
    answer = chat.answer
    await expect(answer.article).to_have_attribute("data-state", "streaming", timeout=WAIT_MS)

    await chat.page.get_by_role("button", name="Stop").click()
    clicked_at = time.monotonic()
    record = await upstream.wait_disconnected(marker, timeout=10)

    assert record.disconnected_at is not None
    assert record.disconnected_at - clicked_at < 2.0  # promptly: seconds, not the 100 s left
    await expect(answer.article).to_have_attribute("data-state", "stopped", timeout=WAIT_MS)
    assert await answer.text() != ""
    assert "Stopped" in await answer.meta()
    assert chat.console_errors == []


async def test_keyboard_alone_writes_two_lines_sends_and_stops(
    chat: ChatPage, proxy: ProxyServer, upstream: FakeUpstreamServer, marker: str
) -> None:
    await chat.open(proxy.url)
    prompt = chat.page.get_by_label("Message")
    await prompt.focus()
    await chat.page.keyboard.type("first line")
    await chat.page.keyboard.press("Shift+Enter")
    await chat.page.keyboard.type(f"{marker} @tokens=2000 @delay=0.05")
    await chat.page.keyboard.press("Enter")
    answer = chat.answer
    await expect(answer.article).to_have_attribute("data-state", "streaming", timeout=WAIT_MS)

    await chat.page.keyboard.press("Escape")

    await upstream.wait_disconnected(marker, timeout=10)
    await expect(answer.article).to_have_attribute("data-state", "stopped", timeout=WAIT_MS)
    user_text = chat.page.locator("article.user .text").last
    sent = f"first line\n{marker} @tokens=2000 @delay=0.05"
    assert await user_text.evaluate("node => node.textContent") == sent
    assert upstream.find(marker)[0].prompt == sent


async def test_stream_dropped_mid_answer_is_marked_interrupted_with_its_partial_text(
    chat: ChatPage, proxy: ProxyServer, marker: str
) -> None:
    prompt = f"{marker} @tokens=20 @delay=0.02 @fault=drop-mid @after=6"
    expected = await proxy_answer(proxy.url, prompt)
    assert not expected.completed
    assert expected.text
    await chat.open(proxy.url)

    await chat.send(prompt)
    answer = await chat.answer_ended()

    assert await answer.state() == "interrupted"
    assert await answer.text() == expected.text
    assert await answer.shown() == expected.text  # one line, no Markdown syntax: shown as is
    assert "Interrupted" in await answer.meta()


FETCH_UNTIL_BROKEN = """async ([url, prompt]) => {
    const response = await fetch(url + "/v1/stream", {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({prompt}),
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    try {
        for (;;) {
            const {value, done} = await reader.read();
            if (done) return {text, broken: false};
            text += decoder.decode(value, {stream: true});
        }
    } catch (error) {
        return {text, broken: true};
    }
}"""


async def test_the_text_just_before_an_abort_reaches_a_reading_page(
    chat: ChatPage, proxy: ProxyServer, marker: str
) -> None:
    # A fetch body that errors discards what it had queued but not yet handed to the reader
    # (the Streams spec's error() empties the queue): the proxy must leave a reading page the
    # moment it needs to take the last text before the connection breaks. Repeated, because
    # each drop races.
    await chat.open(proxy.url)
    for attempt in range(20):
        prompt = f"{marker}-{attempt} @text=tricky @tokens=20 @delay=0 @fault=drop-mid @after=6"
        expected = await proxy_answer(proxy.url, prompt)
        assert not expected.completed
        seen = await chat.page.evaluate(FETCH_UNTIL_BROKEN, [proxy.url, prompt])
        assert seen["broken"]
        assert seen["text"] == expected.text, f"drop {attempt}"


async def test_answer_without_text_says_so(chat: ChatPage, proxy: ProxyServer, marker: str) -> None:
    await chat.open(proxy.url)

    await chat.send(f"{marker} @tokens=0")
    answer = await chat.answer_ended()

    assert await answer.state() == "done"
    assert await answer.text() == ""
    assert await answer.meta() == "The model answered with no text"


async def test_wrong_key_shows_the_401_message(
    chat: ChatPage, start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(api_keys="right-key")
    prompt = f"{marker} hello"
    message = await proxy_error_message(proxy.url, prompt, {"Authorization": "Bearer wrong"})
    await chat.open(proxy.url)
    await expect(chat.page.get_by_role("status")).to_contain_text("API key")

    await chat.page.get_by_label("API key").fill("wrong")
    await chat.send(prompt)
    answer = await chat.answer_ended()

    assert await answer.state() == "error"
    assert await answer.meta() == f"Error 401: {message}"
    # Nothing came back, so the prompt is there to send again.
    await expect(chat.page.get_by_label("Message")).to_have_value(prompt)


async def test_right_key_streams_and_stays_in_session_storage_only(
    chat: ChatPage, start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(api_keys="right-key")
    await chat.open(proxy.url)
    key = chat.page.get_by_label("API key")
    await key.fill("right-key")
    await key.press("Tab")  # `change`: stored, and the model list reloads with it
    await expect(chat.page.get_by_label("Model")).to_have_value("default", timeout=WAIT_MS)

    await chat.send(f"{marker} @tokens=5")
    answer = await chat.answer_ended()

    assert await answer.state() == "done"
    stored = await chat.page.evaluate(
        "[Object.values(sessionStorage), localStorage.length, document.cookie]"
    )
    assert stored == [["right-key"], 0, ""]
    await chat.page.reload()
    await expect(key).to_have_value("right-key")  # same tab, same session


async def test_invalid_request_shows_the_422_message(
    chat: ChatPage, start_proxy: Callable[..., ProxyServer], marker: str
) -> None:
    proxy = start_proxy(max_prompt_chars=40)
    prompt = f"{marker} " + "a long prompt " * 5
    message = await proxy_error_message(proxy.url, prompt)
    await chat.open(proxy.url)

    await chat.send(prompt)
    answer = await chat.answer_ended()

    assert await answer.state() == "error"
    assert await answer.meta() == f"Error 422: {message}"


async def test_model_picker_lists_the_configured_models(
    chat: ChatPage, start_proxy: Callable[..., ProxyServer], upstream: FakeUpstreamServer
) -> None:
    models = [
        {"name": "fast", "url": upstream.url},
        {"name": "local", "url": upstream.url, "dialect": "ollama"},
    ]
    proxy = start_proxy(upstream_url=None, model_list=models)
    await chat.open(proxy.url)

    picker = chat.page.get_by_label("Model")
    await expect(picker.locator("option")).to_have_text(["fast (openai)", "local (ollama)"])
    await picker.select_option("local")
    await chat.send("which model @tokens=3")
    assert await (await chat.answer_ended()).state() == "done"
    assert upstream.find("which model")[-1].path == "/api/chat"


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed", "refused"])
async def test_page_on_another_origin_streams_only_when_cors_allows_it(
    browser: Browser,
    start_proxy: Callable[..., ProxyServer],
    upstream: FakeUpstreamServer,
    other_origin: OtherOriginSite,
    marker: str,
    allowed: bool,
) -> None:
    origins = other_origin.origin if allowed else "https://chat.example.com"
    proxy = start_proxy(cors_origins=origins)
    prompt = f"{marker} @tokens=12 @delay=0.03"
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(other_origin.origin)

    outcome = await page.evaluate(
        """async ([url, prompt]) => {
            const chunks = [];
            try {
                const response = await fetch(url + "/v1/stream", {
                    method: "POST",
                    headers: {"Content-Type": "application/json"},
                    body: JSON.stringify({messages: [{role: "user", content: prompt}]}),
                });
                const reader = response.body.getReader();
                const decoder = new TextDecoder();
                for (;;) {
                    const {done, value} = await reader.read();
                    if (done) break;
                    chunks.push(decoder.decode(value, {stream: true}));
                }
                return {chunks, error: null};
            } catch (error) {
                return {chunks, error: String(error)};
            }
        }""",
        [proxy.url, prompt],
    )
    await context.close()

    if allowed:
        assert outcome["error"] is None
        assert len(outcome["chunks"]) > 1
        assert "".join(outcome["chunks"]) == (await proxy_answer(proxy.url, prompt)).text
    else:
        assert outcome["error"] is not None
        assert "Failed to fetch" in outcome["error"]
        assert upstream.find(marker) == []  # refused at the preflight: nothing went upstream


async def test_screenshot_renders_emoji_and_cjk(chat: ChatPage, tmp_path: Path) -> None:
    # The built-in fake upstream, as `make run` shows it to a first-time user.
    proxy = ProxyServer(proxy_settings(None))
    try:
        await chat.open(proxy.url)
        await chat.send("Hello! Stream me a short answer, please 🙂")
        await chat.answer_ended()
        await chat.send("And now something with 日本語 and emoji 🚀 in it?")
        await chat.answer_ended()
        # The answer's text sits in the paragraphs its Markdown rendered to.
        fonts = await fonts_used(chat.page, "article .text, article .text *")
        await chat.page.screenshot(path=SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / "chat.png")
    finally:
        proxy.close()

    assert "Noto Color Emoji" in fonts
    assert any(font.startswith("Noto Sans CJK") for font in fonts), fonts
    assert chat.console_errors == []


async def fonts_used(page: Page, selector: str) -> set[str]:
    """The fonts Chromium drew the matching elements' text with (none: a glyph is missing)."""
    session = await page.context.new_cdp_session(page)
    await session.send("DOM.enable")
    await session.send("CSS.enable")
    document = await session.send("DOM.getDocument")
    found = await session.send(
        "DOM.querySelectorAll", {"nodeId": document["root"]["nodeId"], "selector": selector}
    )
    fonts: set[str] = set()
    for node_id in found["nodeIds"]:
        used = await session.send("CSS.getPlatformFontsForNode", {"nodeId": node_id})
        fonts.update(font["familyName"] for font in used["fonts"])
    await session.detach()
    return fonts


async def test_proxy_chat_page_false_turns_the_page_off() -> None:
    proxy = ProxyProcess(PROXY_CHAT_PAGE="false")
    try:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            page = await client.get("/")
            script = await client.get("/static/app.js")
            health = await client.get("/healthz")
    finally:
        proxy.close()

    assert page.status_code == 404
    assert page.json()["error"]["type"] == "not_found"
    assert script.status_code == 404
    assert health.status_code == 200


# --- the SSE the page reads: its parser, Markdown, thoughts -------------------------------

# Every rule of the WHATWG event-stream parser the page relies on: the three line ends, `data:`
# with and without its space, data over several lines, comments, ids, unknown fields, UTF-8
# of every length, and a last event that never ended (dropped).
EVENT_STREAM = (
    ": ping\r\n"
    'event: reasoning\r\nid: 1\r\ndata: {"text": "Let me think\\n"}\r\n\r\n'
    'event: delta\rid: 5\rdata:{"text":"日本 🙂 é"}\r\r'
    "event: delta\ndata: line one\ndata:  line two\ndata\n\n"
    "retry: 100\nunknown: x\n: comment\nevent: done\nid: 7\ndata: {}\n\n"
    "data: no id, no event\n\n"
    "data: never ended\n"
)
EVENTS = [
    {"type": "reasoning", "data": '{"text": "Let me think\\n"}', "id": "1"},
    {"type": "delta", "data": '{"text":"日本 🙂 é"}', "id": "5"},
    {"type": "delta", "data": "line one\n line two\n", "id": "5"},
    {"type": "done", "data": "{}", "id": "7"},
    {"type": "message", "data": "no id, no event", "id": "7"},
]
PARSE_EVERY_SPLIT = """(stream) => {
    const bytes = new TextEncoder().encode(stream);
    const parse = (pieces) => {
        const parser = new SSEParser();
        const decoder = new TextDecoder();
        const events = [];
        for (const piece of pieces) {
            events.push(...parser.feed(decoder.decode(piece, {stream: true})));
        }
        events.push(...parser.feed(decoder.decode()));
        return JSON.stringify(events);
    };
    const results = new Set();
    for (let at = 0; at <= bytes.length; at++) {
        results.add(parse([bytes.subarray(0, at), bytes.subarray(at)]));
    }
    results.add(parse(Array.from(bytes, (byte) => Uint8Array.of(byte))));
    return [...results].map((events) => JSON.parse(events));
}"""


def sse_body(*events: tuple[str, object]) -> str:
    """A /v1/stream SSE body as the proxy frames it: ids count characters of text."""
    frames, offset = [": ping\n\n"], 0
    for event, data in events:
        if event in ("delta", "reasoning") and isinstance(data, str):
            offset += len(data)
            data = {"text": data}
        payload = json.dumps(data, ensure_ascii=False)
        frames.append(f"event: {event}\nid: {offset}\ndata: {payload}\n\n")
    return "".join(frames)


async def route_stream(page: Page, body: str) -> None:
    """The page's POST /v1/stream answered with body: the page's reading, not the proxy's."""

    async def fulfil(route: Route) -> None:
        assert route.request.headers["accept"] == "text/event-stream"
        await route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"}, body=body
        )

    await page.route("**/v1/stream", fulfil)


def deltas(text: str, size: int = 3) -> list[tuple[str, object]]:
    """text as delta events of size characters: Markdown syntax split across them."""
    return [("delta", text[at : at + size]) for at in range(0, len(text), size)]


DONE = ("done", {"finish_reason": "stop", "usage": None})


async def test_sse_parser_gives_the_same_events_for_every_split(
    chat: ChatPage, proxy: ProxyServer
) -> None:
    await chat.open(proxy.url)

    results = await chat.page.evaluate(PARSE_EVERY_SPLIT, EVENT_STREAM)

    assert results == [EVENTS]


MARKDOWN_ANSWER = """Here is a **plan** with `inline code`:

1. First
2. Second

- apples
- pears

```python
def greet(name):
    return f"<b>{name}</b>"
```

| model | speed |
|:------|------:|
| fast  | 10    |

See [the docs](https://example.com/docs) and *emphasis*.
"""


async def test_streamed_markdown_renders_code_block_lists_table_and_safe_links(
    chat: ChatPage, proxy: ProxyServer
) -> None:
    await route_stream(chat.page, sse_body(*deltas(MARKDOWN_ANSWER), DONE))
    await chat.open(proxy.url)

    await chat.send("show me Markdown")
    answer = await chat.answer_ended()

    assert await answer.state() == "done"
    assert await answer.text() == MARKDOWN_ANSWER
    rendered = answer.rendered
    code = rendered.locator("pre > code")
    assert await code.evaluate("node => node.textContent") == (
        'def greet(name):\n    return f"<b>{name}</b>"\n'
    )
    assert await rendered.locator("b").count() == 0  # code is text, even when it looks like HTML
    await expect(rendered.locator("ol > li")).to_have_text(["First", "Second"])
    await expect(rendered.locator("ul > li")).to_have_text(["apples", "pears"])
    await expect(rendered.locator("table th")).to_have_text(["model", "speed"])
    await expect(rendered.locator("p > strong")).to_have_text("plan")
    await expect(rendered.locator("p > em")).to_have_text("emphasis")
    await expect(rendered.locator("p > code")).to_have_text("inline code")
    link = rendered.locator("a")
    await expect(link).to_have_attribute("href", "https://example.com/docs")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    assert chat.console_errors == []


RENDER_PREFIX_BY_PREFIX = """(text) => {
    const streamed = document.createElement("div");
    const view = new MarkdownView(streamed);
    for (let end = 1; end <= text.length; end++) view.render(text.slice(0, end));
    const whole = document.createElement("div");
    whole.append(renderMarkdown(text));
    return [streamed.innerHTML, whole.innerHTML];
}"""


async def test_markdown_rendered_character_by_character_matches_one_parse(
    chat: ChatPage, proxy: ProxyServer
) -> None:
    # The blocks that settle while an answer streams must not differ from a parse of the whole:
    # a loose list's items apart, a setext heading, a code block with a blank line inside.
    text = (
        MARKDOWN_ANSWER
        + "\n1. one\n\n2. two\n\n3. three\n\nHeading\n-------\n\n```\na\n\nb\n```\nend\r\nCR\rLF\n"
    )
    await chat.open(proxy.url)

    streamed, whole = await chat.page.evaluate(RENDER_PREFIX_BY_PREFIX, text)

    assert streamed.replace("\n", "") == whole.replace("\n", "")


HOSTILE_ANSWER = (
    'Try <script>window.pwned = "script"</script> and <img src=x onerror="window.pwned = 1">.\n\n'
    '<iframe src="javascript:window.pwned = 2"></iframe>\n\n'
    "[a link](javascript:window.pwned=3) ![a pixel](http://127.0.0.1:9/pixel.png?secret=1)\n"
)


async def test_html_from_the_model_is_inert_text(chat: ChatPage, proxy: ProxyServer) -> None:
    await route_stream(chat.page, sse_body(*deltas(HOSTILE_ANSWER, size=5), DONE))
    await chat.open(proxy.url)

    await chat.send("say something hostile")
    answer = await chat.answer_ended()

    assert await answer.state() == "done"
    assert await chat.page.evaluate("window.pwned") is None
    rendered = answer.rendered
    for element in ("script", "img", "iframe", "[onerror]", "[src]", "a[href^='javascript']"):
        assert await rendered.locator(element).count() == 0, element
    shown = await answer.shown()
    assert '<script>window.pwned = "script"</script>' in shown
    assert '<img src=x onerror="window.pwned = 1">' in shown
    assert '<iframe src="javascript:window.pwned = 2"></iframe>' in shown
    # An image would be a request the model chooses: it is a link the user may follow instead.
    pixel = rendered.locator("a", has_text="a pixel")
    await expect(pixel).to_have_attribute("href", "http://127.0.0.1:9/pixel.png?secret=1")
    assert chat.console_errors == []  # nothing even tried to load


REASONING = ["Let me think", " about <b>this</b>:", "\nfirst 日本, then 🙂", " done."]


async def test_thinking_block_shows_the_reasoning_collapsed_above_the_answer(
    chat: ChatPage, proxy: ProxyServer
) -> None:
    parts = [*(("reasoning", text) for text in REASONING), *deltas("The **answer**."), DONE]
    await route_stream(chat.page, sse_body(*parts))
    await chat.open(proxy.url)

    await chat.send("think first")
    answer = await chat.answer_ended()

    assert await answer.state() == "done"
    thinking = answer.thinking
    await expect(thinking).to_have_count(1)
    assert await thinking.evaluate("node => node.open") is False
    await expect(thinking.locator("summary")).to_have_text(re.compile(r"^Thought for \d"))
    thoughts = thinking.locator(".thoughts")
    assert await thoughts.evaluate("node => node.textContent") == "".join(REASONING)
    assert await thoughts.locator("b").count() == 0
    await expect(thoughts).to_be_hidden()  # collapsed
    above = await thinking.evaluate(
        "(node) => Boolean(node.compareDocumentPosition(node.parentNode.querySelector('.text'))"
        " & Node.DOCUMENT_POSITION_FOLLOWING)"
    )
    assert above
    assert await answer.text() == "The **answer**."
    await expect(answer.rendered.locator("strong")).to_have_text("answer")

    await thinking.locator("summary").click()
    await expect(thoughts).to_be_visible()
    assert chat.console_errors == []


async def test_answer_without_thoughts_has_no_thinking_block(
    chat: ChatPage, proxy: ProxyServer, marker: str
) -> None:
    await chat.open(proxy.url)

    await chat.send(f"{marker} @tokens=5")
    answer = await chat.answer_ended()

    assert await answer.state() == "done"
    await expect(answer.thinking).to_have_count(0)


async def test_error_event_after_text_marks_the_answer_interrupted_with_its_message(
    chat: ChatPage, proxy: ProxyServer
) -> None:
    error = {"type": "upstream_timeout", "message": "no token for 30 s", "request_id": "r1"}
    await route_stream(chat.page, sse_body(*deltas("Partial answer"), ("error", {"error": error})))
    await chat.open(proxy.url)

    await chat.send("fail midway")
    answer = await chat.answer_ended()

    assert await answer.state() == "interrupted"
    assert await answer.text() == "Partial answer"
    assert (await answer.meta()).startswith("Interrupted: no token for 30 s")


async def test_stream_closed_without_done_is_interrupted(
    chat: ChatPage, proxy: ProxyServer
) -> None:
    await route_stream(chat.page, sse_body(*deltas("Cut")))
    await chat.open(proxy.url)

    await chat.send("cut me off")
    answer = await chat.answer_ended()

    assert await answer.state() == "interrupted"
    assert await answer.text() == "Cut"
    assert "Interrupted" in await answer.meta()


async def proxy_sse_parts(proxy_url: str, prompt: str) -> dict[str, str]:
    """The reasoning and the text of the proxy's SSE answer to prompt, each joined."""
    joined = {"reasoning": "", "delta": ""}
    async with (
        httpx.AsyncClient(base_url=proxy_url, timeout=30) as client,
        client.stream(
            "POST",
            "/v1/stream",
            json={"prompt": prompt},
            headers={"Accept": "text/event-stream"},
        ) as response,
    ):
        body = (await response.aread()).decode()
    for frame in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if fields.get("event") in joined:
            joined[fields["event"]] += json.loads(fields["data"])["text"]
    return joined


async def test_thinking_model_streams_its_thoughts_then_the_answer_through_the_proxy(
    chat: ChatPage, proxy: ProxyServer, marker: str
) -> None:
    # End to end: the fake thinks for 30 tokens (`@think`), the proxy relays `reasoning` events.
    prompt = f"{marker} @think=30 @tokens=10 @delay=0.05"
    expected = await proxy_sse_parts(proxy.url, prompt)
    assert expected["reasoning"]
    assert expected["delta"]
    await chat.open(proxy.url)

    await chat.send(prompt)
    thinking = chat.answer.thinking
    await expect(thinking.locator("summary")).to_have_text("Thinking…", timeout=WAIT_MS)
    assert await thinking.evaluate("node => node.open") is False
    answer = await chat.answer_ended()

    assert await answer.state() == "done"
    await expect(thinking.locator("summary")).to_have_text(re.compile(r"^Thought for \d"))
    thoughts = thinking.locator(".thoughts")
    assert await thoughts.evaluate("node => node.textContent") == expected["reasoning"]
    assert await answer.text() == expected["delta"]
    assert chat.console_errors == []
