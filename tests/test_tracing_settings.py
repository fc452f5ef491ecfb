"""Tracing's OTEL_* variables: on only with an endpoint, every bad value named at start-up."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.settings import ConfigError, load_settings
from proxy.tracing_settings import TracingSettingError, tracing_policy

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


def test_off_without_an_endpoint_and_when_the_sdk_is_disabled() -> None:
    assert tracing_policy({}) is None
    assert tracing_policy({"OTEL_SERVICE_NAME": "edge", "OTEL_TRACES_SAMPLER": "always_on"}) is None
    assert tracing_policy({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}) is None


def test_the_base_endpoint_gains_the_traces_path_and_the_traces_endpoint_is_used_as_is() -> None:
    policy = tracing_policy({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert policy is not None
    assert policy.endpoint == "http://collector:4318/v1/traces"
    traces = {**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://vendor.example/otlp"}
    policy = tracing_policy(traces)
    assert policy is not None
    assert policy.endpoint == "https://vendor.example/otlp"


def test_defaults_are_the_specifications() -> None:
    policy = tracing_policy(ENDPOINT)
    assert policy is not None
    assert policy.service_name == "llm-stream-proxy"
    assert policy.sampler == "parentbased_always_on"
    assert (policy.batch.schedule_delay_millis, policy.batch.max_queue_size) == (5000, 2048)
    assert (policy.timeout, policy.compression, policy.headers) == (10.0, "none", ())


def test_service_name_resource_sampler_and_batches_are_honoured() -> None:
    policy = tracing_policy(
        {
            **ENDPOINT,
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, service.name=from-attrs",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BSP_MAX_QUEUE_SIZE": "64",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "32",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        }
    )
    assert policy is not None
    assert policy.service_name == "from-attrs"  # without OTEL_SERVICE_NAME
    assert policy.resource_attributes == (("deployment.environment", "prod"),)
    assert (policy.sampler, policy.sampler_ratio) == ("parentbased_traceidratio", 0.25)
    assert (policy.batch.schedule_delay_millis, policy.batch.max_export_batch_size) == (100, 32)
    assert (policy.timeout, policy.compression) == (2.5, "gzip")


def test_headers_are_kept_but_never_shown() -> None:
    policy = tracing_policy({**ENDPOINT, "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=s3cr%3Dt"})
    assert policy is not None
    assert policy.headers == (("x-api-key", "s3cr=t"),)
    assert "s3cr" not in repr(policy)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_SDK_DISABLED", "yes"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "grpc://collector:4317"),
        ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"),  # above the queue's 2048
        ("OTEL_RESOURCE_ATTRIBUTES", "no-equals-sign"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "=value"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "-1"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
    ],
)
def test_a_bad_value_is_an_error_naming_its_variable(variable: str, value: str) -> None:
    environment = {**ENDPOINT, "OTEL_TRACES_SAMPLER": "traceidratio", variable: value}
    with pytest.raises(TracingSettingError, match=f"^{variable}: "):
        tracing_policy(environment)


def test_a_bad_value_fails_loading_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "30s")
    with pytest.raises(ConfigError, match=r"^OTEL_BSP_EXPORT_TIMEOUT: "):
        load_settings()


def test_the_settings_read_the_otel_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    settings = load_settings()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    assert settings.tracing is not None
    assert settings.tracing.endpoint == "http://collector:4318/v1/traces"


_keys = st.text(st.characters(codec="ascii", exclude_characters=",= %"), min_size=1).map(str.strip)


@given(st.lists(st.tuples(_keys.filter(bool), st.text(max_size=20)), max_size=5))
def test_percent_encoded_pairs_read_back_as_given(pairs: list[tuple[str, str]]) -> None:
    text = ",".join(f"{key}={quote(value, safe='')}" for key, value in pairs)
    policy = tracing_policy({**ENDPOINT, "OTEL_EXPORTER_OTLP_HEADERS": text})
    assert policy is not None
    assert policy.headers == tuple(pairs)
