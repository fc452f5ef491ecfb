"""Client keys (proxy/admission/keys.py): unit tests, no server."""

from __future__ import annotations

import hashlib

import pytest

from proxy.admission.keys import ClientKeys, client_id
from proxy.errors import Unauthorized
from proxy.settings import ClientKeySpec, KeyLimits


def test_an_open_proxy_identifies_nobody_and_refuses_nobody() -> None:
    keys = ClientKeys(())
    assert keys.open
    assert keys.identify(None, None) is None


def test_a_plain_key_is_its_short_hash_by_bearer_or_x_api_key() -> None:
    keys = ClientKeys(("sk-one",))
    assert keys.identify("Bearer sk-one", None) == client_id("sk-one")
    assert keys.identify(None, "sk-one") == client_id("sk-one")
    assert len(client_id("sk-one")) == 12


def test_a_named_key_is_its_name() -> None:
    named = ClientKeySpec("alice", hashlib.sha256(b"sk-alice").digest(), KeyLimits())
    assert ClientKeys((), (named,)).identify("bearer sk-alice", None) == "alice"


@pytest.mark.parametrize(("authorization", "x_api_key"), [(None, None), ("Bearer wrong", None)])
def test_a_missing_or_wrong_key_is_unauthorized_and_never_echoed(
    authorization: str | None, x_api_key: str | None
) -> None:
    with pytest.raises(Unauthorized) as refused:
        ClientKeys(("sk-one",)).identify(authorization, x_api_key)
    assert "wrong" not in refused.value.message
