"""The chat page at `GET /` and its files under `/static/`: plain files, no build step."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC_DIRECTORY: Final = Path(__file__).parent.parent / "static"

# Only the page's own files: model output is untrusted, so even if some got into the DOM as
# markup, no inline script, no inline style and no other origin could run or load.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on each visit (ETag), so an upgraded proxy never serves a stale page.
    "Cache-Control": "no-cache",
}
_RAW_PAGE_HEADERS: Final = [(k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()]


class _PageFiles(StaticFiles):
    """StaticFiles with the page's headers on every file: a stale cached script after an
    upgrade would run against a newer page."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_RAW_PAGE_HEADERS]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def add_chat_page(app: FastAPI) -> None:
    """Serves the page (PROXY_CHAT_PAGE); without it `GET /` stays a 404."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(STATIC_DIRECTORY / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", _PageFiles(directory=STATIC_DIRECTORY), name="static")
