"""Tracing's configuration: the standard OTEL_* variables, parsed once into one frozen value.

settings.py hands this module the environment at start-up; nothing else reads it. Tracing is
on when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or
OTEL_EXPORTER_OTLP_ENDPOINT with `/v1/traces` appended, as the OTLP exporter specification
says), and off otherwise or with OTEL_SDK_DISABLED=true. The SDK would log a warning for a
bad value and carry on with its default; here a bad value stops start-up, naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args
from urllib.parse import unquote

Sampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
SAMPLERS: tuple[Sampler, ...] = get_args(Sampler)
_SAMPLERS: dict[str, Sampler] = {name: name for name in SAMPLERS}
Compression = Literal["none", "gzip", "deflate"]
_COMPRESSIONS: dict[str, Compression] = {"none": "none", "gzip": "gzip", "deflate": "deflate"}
DEFAULT_SERVICE_NAME = "llm-stream-proxy"
TRACES_PATH = "/v1/traces"


class TracingSettingError(ValueError):
    """A bad OTEL_* value: the variable it is about, and what is wrong with it."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable
        self.message = message


@dataclass(slots=True, frozen=True)
class BatchPolicy:
    """OTEL_BSP_*: how spans are batched before export (the specification's defaults)."""

    schedule_delay_millis: int = 5000
    export_timeout_millis: int = 30000
    max_queue_size: int = 2048
    max_export_batch_size: int = 512


@dataclass(slots=True, frozen=True)
class TracingPolicy:
    """Where spans go and which are kept. `headers` may carry a backend's credential."""

    endpoint: str  # the full traces URL
    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: tuple[tuple[str, str], ...] = ()
    sampler: Sampler = "parentbased_always_on"
    sampler_ratio: float = 1.0  # traceidratio samplers only
    batch: BatchPolicy = field(default_factory=BatchPolicy)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    timeout: float = 10.0  # seconds per export request
    compression: Compression = "none"


def tracing_policy(environ: Mapping[str, str]) -> TracingPolicy | None:
    """The policy these variables ask for; None when tracing is off."""
    env = {name.upper(): value.strip() for name, value in environ.items() if _is_otel(name)}
    if _boolean(env, "OTEL_SDK_DISABLED"):
        return None
    endpoint = _endpoint(env)
    if endpoint is None:
        return None
    attributes = dict(_pairs(env, "OTEL_RESOURCE_ATTRIBUTES"))
    service_name = env.get("OTEL_SERVICE_NAME") or attributes.pop("service.name", "")
    attributes.pop("service.name", None)
    sampler = _sampler(env)
    return TracingPolicy(
        endpoint=endpoint,
        service_name=service_name or DEFAULT_SERVICE_NAME,
        resource_attributes=tuple(sorted(attributes.items())),
        sampler=sampler,
        sampler_ratio=_ratio(env) if sampler.endswith("traceidratio") else 1.0,
        batch=_batch(env),
        headers=_pairs(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        or _pairs(env, "OTEL_EXPORTER_OTLP_HEADERS"),
        timeout=_timeout(env),
        compression=_compression(env),
    )


def _is_otel(name: str) -> bool:
    return name.upper().startswith("OTEL_")


def _boolean(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").lower()
    if value not in ("", "true", "false"):
        raise TracingSettingError(name, f"must be true or false, not {value!r}")
    return value == "true"


def _endpoint(env: Mapping[str, str]) -> str | None:
    name, url = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not url:
        name, url = "OTEL_EXPORTER_OTLP_ENDPOINT", env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not url:
            return None
        url = url.rstrip("/") + TRACES_PATH
    if not url.startswith(("http://", "https://")):
        raise TracingSettingError(name, "must start with http:// or https:// (OTLP over HTTP)")
    return url


def _pairs(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """`key=value,key=value`, values percent-decoded (W3C Baggage's format, as the
    specification says for OTEL_RESOURCE_ATTRIBUTES and the exporter's headers)."""
    pairs = []
    for item in env.get(name, "").split(","):
        if not item.strip():
            continue
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            # Never the value: a header may be a credential.
            raise TracingSettingError(name, "every item must be key=value")
        pairs.append((key.strip(), unquote(value.strip())))
    return tuple(pairs)


def _sampler(env: Mapping[str, str]) -> Sampler:
    value = env.get("OTEL_TRACES_SAMPLER", "").lower() or "parentbased_always_on"
    if value in _SAMPLERS:
        return _SAMPLERS[value]
    raise TracingSettingError("OTEL_TRACES_SAMPLER", f"must be one of {', '.join(SAMPLERS)}")


def _ratio(env: Mapping[str, str]) -> float:
    text = env.get("OTEL_TRACES_SAMPLER_ARG", "")
    if not text:
        return 1.0
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise TracingSettingError("OTEL_TRACES_SAMPLER_ARG", "must be a number from 0 to 1")
    return ratio


def _batch(env: Mapping[str, str]) -> BatchPolicy:
    default = BatchPolicy()
    batch = BatchPolicy(
        schedule_delay_millis=_count(env, "OTEL_BSP_SCHEDULE_DELAY", default.schedule_delay_millis),
        export_timeout_millis=_count(env, "OTEL_BSP_EXPORT_TIMEOUT", default.export_timeout_millis),
        max_queue_size=_count(env, "OTEL_BSP_MAX_QUEUE_SIZE", default.max_queue_size, least=1),
        max_export_batch_size=_count(
            env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", default.max_export_batch_size, least=1
        ),
    )
    if batch.max_export_batch_size > batch.max_queue_size:
        raise TracingSettingError(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "must not exceed OTEL_BSP_MAX_QUEUE_SIZE"
        )
    return batch


def _count(env: Mapping[str, str], name: str, default: int, least: int = 0) -> int:
    text = env.get(name, "")
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < least:
        raise TracingSettingError(name, f"must be a whole number, at least {least}")
    return int(text)


def _timeout(env: Mapping[str, str]) -> float:
    """Milliseconds in the environment (the specification's unit), seconds here."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        if env.get(name):
            return _count(env, name, 10_000, least=1) / 1000
    return 10.0


def _compression(env: Mapping[str, str]) -> Compression:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"):
        value = env.get(name, "").lower()
        if not value:
            continue
        if value not in _COMPRESSIONS:
            raise TracingSettingError(name, "must be none, gzip or deflate")
        return _COMPRESSIONS[value]
    return "none"
