"""SPEC §4: configuration is read once, validated at start-up, and keeps secrets secret."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.settings import ConfigError, KeyEntry, ModelSpec, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def serve_with(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    return subprocess.run(
        [sys.executable, "-m", "proxy", "serve"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PROXY_IDLE_TIMEOUT", "soon"),
        ("PROXY_UPSTREAM_DIALECT", "smoke-signals"),
        ("PROXY_UPSTREAM_URL", "ftp://example"),
        ("PROXY_PORT", "99999"),
        ("PROXY_RETRIES", "-1"),
        ("PROXY_MODELS", "not json"),
        ("PROXY_MODELS", '[{"name": "a", "dialect": "smoke", "url": "http://x"}]'),
        ("PROXY_MODELS", '[{"name": "a"}]'),
        ("PROXY_MODELS", '[{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]'),
        ("PROXY_SSE_KEEPALIVE", "0"),
        ("PROXY_RESUME", "perhaps"),
        ("PROXY_RESUME_TTL", "-5"),
        ("PROXY_RESUME_MAX_BYTES", "10"),
    ],
)
def test_bad_variable_fails_start_up_with_one_line_naming_it(variable: str, value: str) -> None:
    result = serve_with({variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


def test_load_settings_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_FIRST_TOKEN_TIMEOUT", "0")
    with pytest.raises(ConfigError, match="PROXY_FIRST_TOKEN_TIMEOUT"):
        load_settings()


def test_upstream_key_is_hidden_from_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_UPSTREAM_API_KEY", "sk-very-secret")
    settings = load_settings()
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in str(settings)
    assert "sk-very-secret" not in repr(settings.models)


def test_single_model_is_named_after_the_upstream_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_UPSTREAM_MODEL", "llama3")
    assert [model.name for model in load_settings().models] == ["llama3"]
    monkeypatch.delenv("PROXY_UPSTREAM_MODEL")
    assert [model.name for model in load_settings().models] == ["default"]


def test_command_line_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_PORT", "9000")
    assert load_settings(port=9100).port == 9100
    assert load_settings(port=None).port == 9000


def test_models_list_replaces_the_single_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_UPSTREAM_URL", "http://ignored")
    monkeypatch.setenv(
        "PROXY_MODELS",
        '[{"name": "fast", "dialect": "ollama", "url": "http://a/", "max_tokens": 100},'
        ' {"name": "smart", "urls": ["http://b", "http://c"], "api_key": "sk-x"}]',
    )
    fast, smart = load_settings().models
    assert (fast.name, fast.dialect, fast.urls, fast.max_tokens) == (
        "fast",
        "ollama",
        ("http://a",),
        100,
    )
    assert (smart.dialect, smart.urls) == ("openai", ("http://b", "http://c"))
    assert smart.api_key is not None
    assert smart.api_key.get_secret_value() == "sk-x"


@pytest.mark.parametrize(
    ("keys", "api_keys", "named"),
    [
        ('[{"name": "a", "key": "k-SECRET"}, {"name": "a", "key": "k2-SECRET"}]', "", "a"),
        ('[{"name": "a", "key": "k-SECRET"}, {"name": "b", "key": "k-SECRET"}]', "", "'b'"),
        ('[{"name": "a", "key": "k-SECRET"}]', "x,k-SECRET", "'a' is also in PROXY_API_KEYS"),
        ('[{"name": "a"}]', "", "'a' needs exactly one of `key` and `key_sha256`"),
        ('[{"name": "a", "key": "k-SECRET", "key_sha256": "00"}]', "", "PROXY_KEYS"),
        ('[{"name": "a", "key": "k-SECRET", "tokens_per_day": 0}]', "", "tokens_per_day"),
        ('[{"name": "a", "key": "k-SECRET", "tokens_per_hour": 5}]', "", "tokens_per_hour"),
        ("[{not json", "", "JSON list of keys"),
        ('[{"name": "a", "key": "k-SECRET", "tokens_per_day": 9}]', "", "need PROXY_REDIS_URL"),
    ],
)
def test_a_bad_client_key_fails_start_up_naming_it_never_the_key(
    monkeypatch: pytest.MonkeyPatch, keys: str, api_keys: str, named: str
) -> None:
    monkeypatch.setenv("PROXY_KEYS", keys)
    monkeypatch.setenv("PROXY_API_KEYS", api_keys)
    monkeypatch.setenv("PROXY_WORKERS", "2")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith("PROXY_KEYS")
    assert named in message
    assert "SECRET" not in message


def test_named_keys_keep_only_a_hash_and_their_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = '[{"name": "alice", "key": "k-SECRET", "tokens_per_minute": 100, "spend_per_month": 5}]'
    monkeypatch.setenv("PROXY_KEYS", keys)
    settings = load_settings()
    (alice,) = settings.admission.named_keys
    assert (alice.name, alice.limits.tokens_per_minute, alice.limits.spend_per_month) == (
        "alice",
        100,
        5.0,
    )
    assert "k-SECRET" not in repr(settings)
    assert "k-SECRET" not in repr(settings.admission)


def documented_fields(heading: str) -> set[str]:
    """The names in the first column of the table under `heading` in configuration.md."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`(\w+)`", row.split(" | ")[0])}


def test_the_docs_tables_list_exactly_the_declared_fields_of_a_model_and_a_key() -> None:
    assert documented_fields("## Several models") == set(ModelSpec.model_fields)
    assert documented_fields("## Named keys and budgets") == set(KeyEntry.model_fields)


def test_every_field_has_a_description_and_every_variable_is_documented() -> None:
    for model in (ModelSpec, KeyEntry):
        assert all(field.description for field in model.model_fields.values()), model
    documentation = (ROOT / "docs" / "configuration.md").read_text()
    example = (ROOT / ".env.example").read_text()
    for name, field in Settings.model_fields.items():
        if name == "tracing":  # the OTEL_* variables: docs/tracing.md
            continue
        variable = str(field.validation_alias or f"PROXY_{name.upper()}")
        assert f"`{variable}`" in documentation, variable
        assert f"# {variable}=" in example, variable
    assert "# PROXY_CONFIG=" in example


def test_a_bad_variable_is_named_as_data_not_only_in_the_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROXY_MODELS", '[{"name": "a", "url": "http://x", "reasoning": "deep"}]')
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert (raised.value.variable, raised.value.where) == ("PROXY_MODELS", "0.reasoning")


def test_a_models_repr_shows_every_field_but_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PROXY_MODELS",
        '[{"name": "a", "url": "http://x", "api_key": "sk-SECRET", "input_price_per_mtok": 2.5}]',
    )
    (model,) = load_settings().models
    assert "sk-SECRET" not in repr(model)
    for name in ModelSpec.model_fields.keys() - {"url"}:  # url is urls' first
        assert f"{name}=" in repr(model), name
    assert model.reasoning is None
