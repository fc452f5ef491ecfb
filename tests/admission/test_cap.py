"""The proxy's stream cap (proxy/admission/cap.py)."""

from __future__ import annotations

import pytest

from proxy.admission.cap import StreamSlots
from proxy.errors import Overloaded


def test_the_cap_refuses_at_once_past_its_limit_and_frees_on_release() -> None:
    slots = StreamSlots(2)
    slots.acquire()
    slots.acquire()
    with pytest.raises(Overloaded) as refused:
        slots.acquire()
    assert refused.value.retry_after == 1
    slots.release()
    slots.acquire()
    assert slots.open == 2
