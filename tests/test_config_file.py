"""SPEC §4: the settings from one file (PROXY_CONFIG), validated as the environment is."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from proxy.fake_upstream import reply_text
from proxy.settings import ConfigError, load_settings
from tests.servers import FakeUpstreamServer, ProxyProcess

ROOT = Path(__file__).resolve().parent.parent
ALICE, BOB = "k-alice-SECRET", "k-bob-SECRET"
UPSTREAM_KEY = "sk-upstream-SECRET"


def write_config(directory: Path, settings: dict[str, Any]) -> Path:
    path = directory / "proxy.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def two_models_and_two_keys(url: str) -> dict[str, Any]:
    """As a file holds them: the upstream key by reference, bob's key as its SHA-256."""
    return {
        "models": [
            {
                "name": "fast",
                "url": url,
                "api_key": {"env": "TEST_UPSTREAM_KEY"},
                "upstream_model": "up-fast",
                "max_tokens": 300,
            },
            {"name": "local", "dialect": "ollama", "url": url, "upstream_model": "up-local"},
        ],
        "keys": [
            {"name": "alice", "key": ALICE},
            {
                "name": "bob",
                "key_sha256": hashlib.sha256(BOB.encode()).hexdigest(),
                "tokens_per_day": 100_000,
            },
        ],
        "idle_timeout": 5,
    }


def as_variables(settings: dict[str, Any]) -> dict[str, str]:
    """The same settings as PROXY_* variables, the reference replaced by its value."""
    models = [
        {**model, "api_key": UPSTREAM_KEY} if "api_key" in model else model
        for model in settings["models"]
    ]
    return {
        "PROXY_MODELS": orjson.dumps(models).decode(),
        "PROXY_KEYS": orjson.dumps(settings["keys"]).decode(),
        "PROXY_IDLE_TIMEOUT": str(settings["idle_timeout"]),
    }


def serve_with(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    return subprocess.run(
        [sys.executable, "-m", "proxy", "serve"],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PROXY_* variable and no `.env` but the test's own: tmp_path is the directory."""
    for name in [name for name in os.environ if name.startswith("PROXY_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def what_each_client_sees(proxy: ProxyProcess, marker: str) -> list[Any]:
    seen: list[Any] = []
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        for key in (ALICE, BOB, "k-nobody"):
            headers = {"Authorization": f"Bearer {key}"}
            models = await client.get("/v1/models", headers=headers)
            listed = models.json()["data"] if models.is_success else []
            seen.append((models.status_code, [(m["id"], m["dialect"]) for m in listed]))
            for model in ("fast", "local"):
                body = {"model": model, "prompt": f"{marker} {model} @tokens=4"}
                response = await client.post("/v1/stream", json=body, headers=headers)
                said = response.text if response.is_success else response.json()["error"]["type"]
                seen.append((key, model, response.status_code, said))
    return seen


async def test_a_file_with_two_models_and_two_keys_serves_as_the_same_variables_would(
    upstream: FakeUpstreamServer, tmp_path: Path, marker: str
) -> None:
    settings = two_models_and_two_keys(upstream.url)
    from_file = ProxyProcess(
        PROXY_CONFIG=str(write_config(tmp_path, settings)), TEST_UPSTREAM_KEY=UPSTREAM_KEY
    )
    from_variables = ProxyProcess(**as_variables(settings))
    try:
        seen = await what_each_client_sees(from_file, marker)
        assert seen == await what_each_client_sees(from_variables, marker)
    finally:
        from_file.close()
        from_variables.close()
    assert seen[0] == (200, [("fast", "openai"), ("local", "ollama")])
    assert (ALICE, "fast", 200, reply_text(f"{marker} fast @tokens=4", 4)) in seen
    assert (BOB, "local", 200, reply_text(f"{marker} local @tokens=4", 4)) in seen
    assert seen[-1] == ("k-nobody", "local", 401, "unauthorized")
    # Alice and Bob, through each proxy: four requests per model, each sent as configured.
    fast, local = upstream.find(f"{marker} fast"), upstream.find(f"{marker} local")
    assert len(fast) == len(local) == 4
    assert {(r.path, r.json["model"], r.headers["authorization"]) for r in fast} == {
        ("/v1/chat/completions", "up-fast", f"Bearer {UPSTREAM_KEY}")
    }
    assert {(r.path, r.json["model"], "authorization" in r.headers) for r in local} == {
        ("/api/chat", "up-local", False)
    }


FAST = {"name": "fast", "url": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    ("settings", "place"),
    [
        (
            {"models": [FAST, {"name": "slow", "dialect": "smoke", "url": "http://x"}]},
            "models.1 (slow).dialect",
        ),
        ({"models": [{**FAST, "max_token": 5}]}, "models.0 (fast).max_token"),
        ({"models": [FAST, {"name": "nowhere"}]}, "models.1 (nowhere).urls"),
        ({"models": [{**FAST, "reasoning": "deep"}]}, "models.0 (fast).reasoning"),
        (
            {"keys": [{"name": "alice", "key": ALICE, "tokens_per_day": 0}]},
            "keys.0 (alice).tokens_per_day",
        ),
        ({"idle_timeout": "soon"}, "[idle_timeout]"),
        ({"idel_timeout": 5}, "`idel_timeout`"),
    ],
)
def test_a_bad_entry_in_the_file_stops_start_up_with_one_line_naming_the_entry_and_the_field(
    tmp_path: Path, settings: dict[str, Any], place: str
) -> None:
    result = serve_with({"PROXY_CONFIG": str(write_config(tmp_path, settings))}, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llm-stream-proxy: invalid configuration: PROXY_CONFIG")
    assert place in lines[0]
    assert "SECRET" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (f"keys:\n- {{name: a, key: {ALICE}}}\n- {{name: b, key: {ALICE}}}\n", "'b'"),
        (f"keys:\n- {{name: a, key: {ALICE}, key_sha256: '00'}}\n", "keys.0 (a).key_sha256"),
        (f"keys:\n- {{name: a, key: {ALICE}, tokens_per_hour: 5}}\n", "tokens_per_hour"),
        (f"keys:\n- {{name: a, key: {ALICE}}}\napi_keys: x,{ALICE}\n", "also in PROXY_API_KEYS"),
        (f"keys:\n- {{name: a, key: [{ALICE}]}}\n", "keys.0 (a).key"),
        (f"upstream_api_key: {UPSTREAM_KEY}\nkeys: [{{name: a, key: '{ALICE}\n", "not valid YAML"),
        (f"models:\n- {{name: m, url: 'ftp://{UPSTREAM_KEY}'}}\n", "models.0 (m).url"),
    ],
)
def test_a_keys_value_never_appears_in_an_error(
    clean_environment: Path, text: str, named: str
) -> None:
    (clean_environment / "proxy.yaml").write_text(text)
    os.environ["PROXY_CONFIG"] = "proxy.yaml"
    try:
        with pytest.raises(ConfigError) as raised:
            load_settings()
    finally:
        del os.environ["PROXY_CONFIG"]
    assert raised.value.variable == "PROXY_CONFIG"
    assert named in str(raised.value)
    assert "SECRET" not in str(raised.value)


def test_the_environment_overrides_the_file(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_file = {**two_models_and_two_keys("http://file"), "max_body_bytes": 4096}
    monkeypatch.setenv("PROXY_CONFIG", str(write_config(clean_environment, in_file)))
    monkeypatch.setenv("TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("PROXY_IDLE_TIMEOUT", "3")
    monkeypatch.setenv("PROXY_MODELS", '[{"name": "env-model", "url": "http://env"}]')
    settings = load_settings()
    assert settings.idle_timeout == 3
    assert [(m.name, m.urls) for m in settings.models] == [("env-model", ("http://env",))]
    assert settings.max_body_bytes == 4096  # set by the file alone
    assert [key.name for key in settings.admission.named_keys] == ["alice", "bob"]
    # A bad value from the environment is the variable's, though the file sets it too.
    monkeypatch.setenv("PROXY_IDLE_TIMEOUT", "soon")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert (raised.value.variable, raised.value.where) == ("PROXY_IDLE_TIMEOUT", "")


def test_a_dot_env_file_overrides_the_file_too(clean_environment: Path) -> None:
    write_config(clean_environment, {"idle_timeout": 12, "retries": 5})
    (clean_environment / ".env").write_text("PROXY_CONFIG=proxy.yaml\nPROXY_IDLE_TIMEOUT=4\n")
    settings = load_settings()
    assert (settings.idle_timeout, settings.retries) == (4, 5)


def test_a_secret_given_as_an_env_reference_resolves(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {
        **two_models_and_two_keys("http://upstream"),
        "upstream_api_key": {"env": "TEST_SINGLE_KEY"},
        "api_keys": {"env": "TEST_CLIENT_KEYS"},
    }
    settings["keys"][0]["key"] = {"env": "TEST_ALICE_KEY"}
    monkeypatch.setenv("PROXY_CONFIG", str(write_config(clean_environment, settings)))
    monkeypatch.setenv("TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("TEST_SINGLE_KEY", "sk-single-SECRET")
    monkeypatch.setenv("TEST_CLIENT_KEYS", "k-one-SECRET,k-two-SECRET")
    monkeypatch.setenv("TEST_ALICE_KEY", ALICE)
    loaded = load_settings()
    fast = loaded.models[0]
    assert fast.api_key is not None
    assert fast.api_key.get_secret_value() == UPSTREAM_KEY
    assert loaded.upstream_api_key is not None
    assert loaded.upstream_api_key.get_secret_value() == "sk-single-SECRET"
    assert loaded.admission.client_keys == ("k-one-SECRET", "k-two-SECRET")
    (alice, _) = loaded.admission.named_keys
    assert alice.key_sha256 == hashlib.sha256(ALICE.encode()).digest()
    assert "SECRET" not in repr(loaded)
    assert "SECRET" not in repr(loaded.models)


def test_a_reference_to_an_unset_variable_stops_start_up_naming_it(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = two_models_and_two_keys("http://upstream")
    monkeypatch.setenv("PROXY_CONFIG", str(write_config(clean_environment, settings)))
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert str(raised.value) == (
        "PROXY_CONFIG [models.0 (fast).api_key]: refers to TEST_UPSTREAM_KEY, which is not set"
    )


def test_a_missing_file_stops_start_up(clean_environment: Path) -> None:
    result = serve_with({"PROXY_CONFIG": "nowhere.yaml"}, clean_environment)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "llm-stream-proxy: invalid configuration: PROXY_CONFIG: no such file: nowhere.yaml"
    )


def test_every_example_file_is_a_valid_configuration(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples = [ROOT / "docker" / "proxy.yaml", ROOT / "docker/kubernetes/base/proxy.yaml"]
    for name in ("UPSTREAM_API_KEY", "WEB_APP_KEY", "BATCH_KEY"):
        monkeypatch.setenv(name, f"{name}-SECRET")
    for example in examples:
        monkeypatch.setenv("PROXY_CONFIG", str(example))
        settings = load_settings()
        assert settings.models, example
