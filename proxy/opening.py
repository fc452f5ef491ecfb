"""The one way into a stream, for every route: from the request's id to the commit point.

    id → client key → format (Accept) → admission → body → model → resume, or open
                                                                   (budget, attempts)

`StreamOpener(route)` is the dependency (with `yield`) of every streaming path operation: it
takes the request that far, yields the Stream (its Head, then its items), and closes it on
every exit, after the response has been sent (FastAPI runs a dependency's exit then). A
route adds only what is its own (StreamRoute): its request model, the formats it offers and
where its resumable streams are kept. Every refusal on the way, logged once by the session,
answers with the request's id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from starlette.requests import Request

from proxy.conversation import Conversation
from proxy.errors import BudgetUnavailable, NotAcceptable, ProxyError, UnsupportedParameter
from proxy.formats import Head, OutputFormat, negotiate
from proxy.guards import Guards
from proxy.ids import request_id
from proxy.parts import ItemSource
from proxy.record import Arrival, StreamRecord
from proxy.requests import (
    StreamBody,
    check_prompt_length,
    choose_upstream,
    given_request_id,
    peer_of,
    read_body,
)
from proxy.resume.items import StoredItems
from proxy.services import Services, Upstream
from proxy.session import StreamSession


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
    """What a streaming path operation yields: its Head, then its items; and the request
    that asked for them and its record, for a route whose framing depends on the request
    (None: a stored stream's)."""

    head: Head
    items: ItemSource
    request: StreamBody | None = None
    record: StreamRecord | None = None


class StreamOpener:
    def __init__(self, route: StreamRoute) -> None:
        self.route = route

    async def __call__(self, request: Request) -> AsyncIterator[Stream]:
        services = services_of(request)
        session = StreamSession(
            services, request_id(request.headers.get("x-request-id")), request.receive
        )
        session.record.route = request.url.path  # one of the streaming routes' own paths
        session.record.arrival = arrival_of(request)
        try:
            async with session.opening():
                stream = await self._start(request, services, session)
        except ProxyError as exc:
            record = session.record
            exc.extra_headers = budget_headers(record) or await windows_now(services, record, exc)
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
        client = identify_client(request, services.guards)
        output = acceptable(request, route.formats)
        session.record.output_format = output.name
        await session.admit(client, peer_of(request))
        if route.check_headers is not None:
            route.check_headers(request.headers)
        body = await read_body(request, settings.request_limits, route.request_model)
        session.name_model(body.model or "-")
        check_prompt_length(body, settings.request_limits)
        upstream = choose_upstream(services.upstreams, body)
        head = Head(
            output,
            session.request_id,
            settings.sse_keepalive,
            message_id=body.response_message_id(),
        )
        resume_id = body.resume_id(given_request_id(request))
        conversation = body.conversation().reasoning_or(upstream.spec.reasoning)
        refuse_beyond(conversation, upstream)
        if services.resumable is None or resume_id is None:
            await session.open(upstream, conversation, output.text_only)
            return Stream(with_budget(head, session.record), session, body, session.record)
        session.record.resumable = True
        attributes = {"request_id": session.request_id}
        if head.message_id:
            attributes["message_id"] = head.message_id
        live = await services.resumable.start(
            session,
            functools.partial(session.open, upstream, conversation, output.text_only),
            route.resume_prefix + resume_id,
            owner_of(client),
            attributes,
        )
        items = StoredItems(live.follow(0), session.request_id, request.receive)
        return Stream(with_budget(head, session.record), items, body, session.record)


def refuse_beyond(conversation: Conversation, upstream: Upstream) -> None:
    """A 400 naming the field a model's dialect cannot carry (SPEC §5h): never dropped."""
    beyond = conversation.beyond(upstream.dialect.capabilities)
    if beyond is not None:
        param, what = beyond
        dialect, model = upstream.dialect.name, upstream.spec.name
        message = (
            f"{param}: model {model!r} speaks the {dialect} dialect, which cannot carry {what}"
        )
        raise UnsupportedParameter(message, param=param)


def with_budget(head: Head, record: StreamRecord) -> Head:
    """A budgeted key's stream tells what is left of its budget (docs/budgets.md)."""
    headers = budget_headers(record)
    return dataclasses.replace(head, extra=headers) if headers else head


async def windows_now(
    services: Services, record: StreamRecord, refusal: ProxyError
) -> tuple[tuple[str, str], ...]:
    """A budgeted key's x-ratelimit-* headers as its windows stand, for a refusal before its
    budget was consulted; none when the budget itself refused, or its store is down."""
    if record.budget is not None or isinstance(refusal, BudgetUnavailable):
        return ()
    return await budget_state(services, record.client)


async def budget_state(services: Services, client: str | None) -> tuple[tuple[str, str], ...]:
    """The key's x-ratelimit-* headers as its windows stand (none for a key without
    budgets, or while their store is down)."""
    budgets = services.guards.budgets
    if client is None or budgets.limits(client) is None:
        return ()
    try:
        _, headers = await budgets.usage(client, services.default_upstream.spec)
    except BudgetUnavailable:
        return ()
    return headers


def budget_headers(record: StreamRecord) -> tuple[tuple[str, str], ...]:
    """A budgeted key's x-ratelimit-* headers, once its stream has reserved (or been refused):
    on its response, whether a stream or an error."""
    return () if record.budget is None else record.budget.headers


def arrival_of(request: Request) -> Arrival:
    """The request's method, and the trace context its caller sent."""
    headers = request.headers
    return Arrival(request.method, headers.get("traceparent"), headers.get("tracestate"))


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def identify_client(request: Request, guards: Guards) -> str | None:
    """The client's short id when keys are configured (401 without a valid one)."""
    return guards.keys.identify(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )


def owner_of(client: str | None) -> str:
    """Whom a stored stream belongs to: the client key's id ("" on an open proxy)."""
    return client or ""


def acceptable(request: Request, offered: tuple[OutputFormat, ...]) -> OutputFormat:
    """The format the client's Accept asks for, or 406 (issue 13)."""
    if len(offered) == 1:
        return offered[0]
    output = negotiate(request.headers.get("accept"), offered)
    if output is None:
        types = ", ".join(candidate.media_type for candidate in offered)
        raise NotAcceptable(f"Accept must allow one of: {types}")
    return output


async def authenticate(request: Request) -> str | None:
    """The client key, for the endpoints that are not streams; a refusal is logged and
    observed as a stream's is, and answers with the request's id."""
    services = services_of(request)
    try:
        return identify_client(request, services.guards)
    except ProxyError as exc:
        exc.request_id = request_id(request.headers.get("x-request-id"))
        record = StreamRecord(exc.request_id, request.url.path, arrival=arrival_of(request))
        record.refused(exc)
        record.finish()
        services.observers.stream_ended(record)
        raise


@contextmanager
def answering_as(request_id: str) -> Iterator[None]:
    """Refusals raised here answer with this request id (the stream's session does this
    for the refusals it logs)."""
    try:
        yield
    except ProxyError as exc:
        exc.request_id = request_id
        raise
