"""The monitoring files in docker/: they parse, and the dashboard asks only for what we export."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import ProxyServer
from tests.test_deploy import compose_config, docker_config  # noqa: F401  (fixture)

DOCKER = Path(__file__).parent.parent / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "llm-stream-proxy.json"
PROVISIONING = DOCKER / "grafana" / "provisioning"

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return loaded


def queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variables."""
    expressions = [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]
    expressions += [variable["definition"] for variable in dashboard()["templating"]["list"]]
    return expressions


async def exported_names(proxy: ProxyServer) -> set[str]:
    """The series names GET /metrics can carry, by each family's declared type."""
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        text = (await client.get("/metrics")).text
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in _SUFFIXES.get(family.type, ("",))
    }


async def test_every_metric_the_dashboard_queries_is_exported(proxy: ProxyServer) -> None:
    queried = {name for query in queries() for name in re.findall(r"\bllm_proxy_\w+", query)}
    assert queried
    assert queried <= await exported_names(proxy)


def test_the_dashboard_shows_what_issue_12_asks_for() -> None:
    expressions = " ".join(queries())
    for wanted in (
        r"sum by \(outcome\) \(rate\(llm_proxy_streams_total",
        r"llm_proxy_streams_in_flight",
        r"histogram_quantile\(0\.5, .*llm_proxy_time_to_first_byte_seconds_bucket",
        r"histogram_quantile\(0\.95, .*llm_proxy_time_to_first_byte_seconds_bucket",
        r"histogram_quantile\(0\.99, .*llm_proxy_time_to_first_byte_seconds_bucket",
        r"sum by \(model, kind\) \(rate\(llm_proxy_tokens_total",
        r"sum by \(replica, result\) \(rate\(llm_proxy_upstream_attempts_total\{[^}]*"
        r"result!=\"ok\"",
    ):
        assert re.search(wanted, expressions), wanted


def test_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (datasource,) = provisioned["datasources"]
    assert datasource["type"] == "prometheus"
    panels = dashboard()["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert all(target["datasource"]["uid"] == datasource["uid"] for target in panel["targets"])
        grid = panel["gridPos"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, panel["title"]
        assert grid["x"] + grid["w"] <= 24
        cells |= area


def test_the_dashboard_provider_points_at_a_folder() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "llm-stream-proxy.yaml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"].startswith("/")


def test_prometheus_scrapes_the_proxies_metrics() -> None:
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["port"] == 8000
    assert "proxy" in discovery["names"]


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A compose service's bind mounts: where in the container, from which host path."""
    return {
        volume["target"]: Path(volume["source"])
        for volume in service.get("volumes", [])
        if volume["type"] == "bind"
    }


def test_the_monitoring_profile_runs_prometheus_and_grafana_on_these_files(
    docker_config: Path,  # noqa: F811
) -> None:
    services = compose_config(docker_config, "monitoring")["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert mounts(prometheus)["/etc/prometheus/prometheus.yml"] == DOCKER / "prometheus.yml"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "llm-stream-proxy.yaml").read_text())
    assert mounts(grafana)["/etc/grafana/provisioning"] == PROVISIONING
    dashboards = provider["providers"][0]["options"]["path"]
    assert mounts(grafana)[dashboards] == DASHBOARD.parent
    # Unauthenticated endpoints stay on the host's loopback.
    for service in (prometheus, grafana):
        assert all(port["host_ip"] == "127.0.0.1" for port in service["ports"])
    # The proxy it scrapes runs beside it.
    assert "proxy" in services
