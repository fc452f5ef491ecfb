"""The one way into a stream, for every route: from the request's id to the commit point.

    id → client key → format (Accept) → admission → body → model → resume, or open
                                                                   (budget, attempts)

`StreamOpener(route)` is the dependency (with `yield`) of every streaming path operation: it
takes the request that far, yields the Stream (its Head, then its items), and closes it on
every exit, after the response has been sent (FastAPI runs a dependency's exit then). A
route adds only what is its own (StreamRoute): its request model, the formats it offers and
where its resumable streams are kept; its path operation returns `stream.response()`. Every
refusal on the way, logged once by the session, answers with the request's id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse

from proxy.authentication import identify_client
from proxy.errors import (
    BudgetUnavailable,
    CompletionTooLarge,
    ProxyError,
    UpstreamError,
    answering_as,
)
from proxy.formats import Head, Item, OutputFormat
from proxy.parts import ItemSource, Part, characters
from proxy.record import StreamRecord
from proxy.requests import (
    StreamBody,
    acceptable,
    arrival_of,
    check_prompt_length,
    choose_upstream,
    given_request_id,
    peer_of,
    read_body,
    request_id_of,
)
from proxy.responses import StreamResponse
from proxy.resumable import owner_of
from proxy.resume.items import StoredItems
from proxy.services import Services, services_of
from proxy.session import StreamSession
from proxy.values import Done, Failed, utf8_length


@dataclass(slots=True, frozen=True)
class StreamRoute:
    """What a route adds to the one way into a stream."""

    request_model: type[StreamBody]
    # The representations it offers, its preferred first; a route that offers one answers
    # with it whatever Accept says (as the AI SDK's own server helpers do).
    formats: tuple[OutputFormat, ...]
    # Where its resumable streams are kept (PROXY_RESUME), apart from other routes'.
    resume_prefix: str
    # Refuses (raises) what the request's headers ask for that the route cannot relay, before
    # its body is read: the Messages API's `anthropic-beta` features.
    check_headers: Callable[[Mapping[str, str]], None] | None = None


@dataclass(slots=True, frozen=True)
class Stream:
    """What a streaming path operation answers with: its Head, then its items; and the
    request that asked for them and its session, for a route whose framing depends on the
    request (None: a stored stream's)."""

    head: Head
    items: ItemSource
    request: StreamBody | None = None
    session: StreamSession | None = None

    @property
    def record(self) -> StreamRecord | None:
        """The stream's record, to read: the session writes it (`failed_whole`)."""
        return None if self.session is None else self.session.record

    async def content(self, *, owned: bool = False) -> AsyncGenerator[Item, None]:
        """The Head, then the items: every streaming route's response content. `owned`: no
        opener closes the items, so this does, when the response closes it (on every path)."""
        try:
            yield self.head
            async for item in self.items:
                yield item
        finally:
            if owned:
                await self.items.aclose()

    def response(self, head: Head | None = None, *, owned: bool = False) -> StreamResponse:
        """The stream as its response, framed by `head` (its own Head by default)."""
        framed = self if head is None else dataclasses.replace(self, head=head)
        return StreamResponse(framed.content(owned=owned))

    async def whole(self, gathering: Gathering) -> JSONResponse:
        """Not streamed: the answer gathered whole once it has ended, as the API's one JSON
        object. Nothing was sent before the end, so a failure after the first part is still an
        error status (502, SPEC §5c), and the stream's log line says so."""
        head, session = self.head, self.session
        assert session is not None, "a live stream"
        try:
            with answering_as(head.request_id):
                body = await _gathered(gathering, self.items)
        except UpstreamError as exc:
            session.failed_whole(exc)
            raise
        # A budgeted key's x-ratelimit-* headers go with it.
        return JSONResponse(body, headers={"X-Request-ID": head.request_id, **dict(head.extra)})


class Gathering(Protocol):
    """An API's whole answer, gathered from a stream's parts (`stream: false`)."""

    def add(self, part: Part) -> None: ...

    def whole(self, done: Done) -> dict[str, Any]: ...


# What a whole answer may hold in memory until its end (SPEC §5b), in UTF-8 bytes: far above
# any model's output limit, far below what would hurt the proxy.
MAX_WHOLE_BYTES: Final = 16 * 1024 * 1024


async def _gathered(gathering: Gathering, items: ItemSource) -> dict[str, Any]:
    size = 0
    async for item in items:
        if isinstance(item, Done):
            return gathering.whole(item)
        if isinstance(item, Failed):
            error = UpstreamError(item.message)  # as it would have been before the commit
            error.error_type = item.error["error"]["type"]
            raise error
        gathering.add(item)
        size += utf8_length(characters(item))
        if size > MAX_WHOLE_BYTES:
            message = f"the answer is longer than {MAX_WHOLE_BYTES} bytes: ask with stream: true"
            raise CompletionTooLarge(message)
    raise AssertionError("a stream ends with its Ending")


class StreamOpener:
    def __init__(self, route: StreamRoute) -> None:
        self.route = route

    async def __call__(self, request: Request) -> AsyncIterator[Stream]:
        services = services_of(request)
        session = StreamSession(services, request_id_of(request), request.receive)
        session.record.route = request.scope["path"]  # one of the streaming routes' own paths
        session.record.arrival = arrival_of(request)
        try:
            async with session.opening():
                stream = await self._start(request, services, session)
        except ProxyError as exc:
            if not exc.extra_headers and not isinstance(exc, BudgetUnavailable):
                exc.extra_headers = await _rate_limit_headers(services, session)
            raise
        try:
            yield stream
        except asyncio.CancelledError:
            if stream.items is session:
                session.cancelled()
            raise
        finally:
            await stream.items.aclose()

    async def _start(self, request: Request, services: Services, session: StreamSession) -> Stream:
        route, settings = self.route, services.settings
        client = identify_client(request, services)
        output = acceptable(request, route.formats)
        session.record.output_format = output.name
        await session.admit(client, peer_of(request))
        if route.check_headers is not None:
            route.check_headers(request.headers)
        body = await read_body(request, settings.request_limits, route.request_model)
        session.name_model(body.model or "-")
        asked = body.conversation()  # built once: its length, then its model's defaults
        check_prompt_length(asked, settings.request_limits)
        upstream = choose_upstream(services.upstreams, body)
        head = Head(
            output,
            session.request_id,
            settings.sse_keepalive,
            message_id=body.response_message_id(),
        )
        conversation = asked.reasoning_or(upstream.spec.reasoning)
        upstream.refuse_beyond(conversation)
        resumable = services.resumable
        resume_id = None if resumable is None else body.resume_id(given_request_id(request))
        if resumable is None or resume_id is None:
            await session.open(upstream, conversation, output.text_only)
            return Stream(_with_budget(head, session), session, body, session)
        session.record.resumable = True
        attributes = {"request_id": session.request_id}
        if head.message_id:
            attributes["message_id"] = head.message_id
        live = await resumable.start(
            session,
            functools.partial(session.open, upstream, conversation, output.text_only),
            route.resume_prefix + resume_id,
            owner_of(client),
            attributes,
        )
        items = StoredItems(live.follow(0), session.request_id, request.receive)
        return Stream(_with_budget(head, session), items, body, session)


def _with_budget(head: Head, session: StreamSession) -> Head:
    """A budgeted key's stream tells what is left of its budget (docs/budgets.md)."""
    headers = session.rate_limit_headers
    return dataclasses.replace(head, extra=headers) if headers else head


async def _rate_limit_headers(
    services: Services, session: StreamSession
) -> tuple[tuple[str, str], ...]:
    """A refusal's x-ratelimit-* headers: the reservation's once the budget was consulted,
    else the key's windows as they stand."""
    if session.record.budget is not None:  # the budget reserved, or refused
        return session.rate_limit_headers
    client, model = session.record.client, services.default_upstream.spec
    return await services.admission.rate_limit_headers(client, model)
