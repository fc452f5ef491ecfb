"""The admission ticket (proxy/admission/ticket.py): unit tests, no server."""

from __future__ import annotations

import pytest

from proxy.admission import Admission
from proxy.conversation import Conversation, Message
from proxy.errors import BudgetExceeded, OutputLimitReached, Overloaded, RateLimited
from proxy.settings import ModelSpec
from proxy.values import Usage
from tests.servers import proxy_settings

MODEL = ModelSpec(name="m")


def admission(**overrides: object) -> Admission:
    return Admission(proxy_settings(None, **overrides).admission)


async def test_a_ticket_holds_a_slot_until_it_is_released_once() -> None:
    shared = admission(max_concurrent_streams=1)
    ticket = await shared.admit("client-a", "127.0.0.1")
    with pytest.raises(Overloaded):
        await shared.admit("client-b", "127.0.0.1")
    await ticket.release()
    await ticket.release()  # a second release frees nothing more
    assert shared.slots.open == 0
    again = await shared.admit("client-b", "127.0.0.1")
    assert shared.slots.open == 1
    await again.release()


async def test_a_refused_admission_holds_nothing() -> None:
    shared = admission(max_concurrent_streams=5, max_streams_per_key=1)
    held = await shared.admit("client-a", "127.0.0.1")
    with pytest.raises(RateLimited):
        await shared.admit("client-a", "127.0.0.1")
    assert shared.slots.open == 1  # the refused one gave its cap slot back
    await held.release()
    assert shared.slots.open == 0
    await (await shared.admit("client-a", "127.0.0.1")).release()


def budgeted(**limits: object) -> Admission:
    keys = [{"name": "alice", "key": "sk-alice", **limits}]
    return Admission(proxy_settings(None, key_list=keys).admission)


async def test_a_budgeted_ticket_hands_back_its_note_and_headers_and_settles_once() -> None:
    shared = budgeted(tokens_per_day=1000)
    ticket = await shared.admit("alice", "127.0.0.1")
    conversation = Conversation((Message("user", "hi"),), max_tokens=50)
    capped = await ticket.reserve(MODEL, conversation)
    assert capped.max_tokens == 50
    assert ticket.budget is not None
    assert ticket.budget.settled_tokens is None
    assert dict(ticket.headers)["x-ratelimit-limit-tokens"] == "1000"
    await ticket.release(Usage(prompt_tokens=3, completion_tokens=7), 20)
    await ticket.release()  # once
    assert ticket.budget.settled_tokens == 10
    assert ticket.headers  # still told, for an error answered after the release


async def test_a_budget_past_its_allowance_is_told_by_parts_or_bytes() -> None:
    ticket = await budgeted(tokens_per_day=1000).admit("alice", "127.0.0.1")
    await ticket.reserve(MODEL, Conversation((Message("user", "hi"),), max_tokens=20))
    assert ticket.past_allowance(40, 20) is None
    assert isinstance(ticket.past_allowance(40, 21), OutputLimitReached)  # parts
    assert isinstance(ticket.past_allowance(161, 5), OutputLimitReached)  # 8 bytes a token
    await ticket.release()


async def test_a_refused_budget_is_its_note_and_its_error_carries_the_headers() -> None:
    ticket = await budgeted(tokens_per_day=20).admit("alice", "127.0.0.1")
    with pytest.raises(BudgetExceeded) as refused:
        await ticket.reserve(MODEL, Conversation((Message("user", "hi " * 40),)))
    assert ticket.budget is not None
    assert ticket.budget.refused == "tokens_per_day"
    assert dict(refused.value.extra_headers)["x-ratelimit-remaining-tokens"] == "0"
    await ticket.release()
