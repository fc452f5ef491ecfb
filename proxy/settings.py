"""All configuration, read once at start-up; the only module that reads the environment."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal

import limits
from dotenv import dotenv_values
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from proxy.config_sources import (
    CONFIG_VARIABLE,
    ConfigError,
    ConfigFileSource,
    config_file_path,
    file_place,
    read_config_file,
    secret_from_reference,
    setting_error,
)
from proxy.tracing_settings import TracingPolicy, TracingSettingError, tracing_policy

__all__ = ["ConfigError"]  # raised by load_settings, defined with the sources that raise it

DialectName = Literal["openai", "openai-completions", "ollama", "tgi", "anthropic"]
LogFormat = Literal["json", "text"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]

DEFAULT_MODEL_NAME = "default"
ENV_FILE = ".env"  # in the directory the proxy starts in; the environment wins over it


# What a model's stream reasons with when a request does not say (issue 26); None is the
# upstream's own default.
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]
# A secret is its value, or `{env: NAME}`: the value of the environment variable NAME.
Secret = Annotated[SecretStr, BeforeValidator(secret_from_reference)]
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class ModelSpec(BaseModel):
    """One model clients may ask for, and where and how to reach it: an item of PROXY_MODELS
    (or of `models` in the PROXY_CONFIG file), or the model the PROXY_UPSTREAM_* variables
    make. Each field is declared here once; docs/configuration.md's table lists them all.

    An empty `urls` means the built-in fake upstream, started with the app.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="what clients send as `model`")
    dialect: DialectName = Field(default="openai", description="the upstream's API")
    url: str | None = Field(default=None, repr=False, description="the base URL (first of urls)")
    urls: tuple[str, ...] = Field(default=(), description="the base URLs of replicas")
    api_key: Secret | None = Field(default=None, description="secret sent upstream")
    upstream_model: str | None = Field(default=None, description="the model name sent upstream")
    max_tokens: int = Field(default=4096, ge=1, description="ceiling for a request's max_tokens")
    # Ask for token usage where the API reports it only when asked (OpenAI-compatible
    # `stream_options.include_usage`, TGI `details`); off for servers that reject the field.
    stream_usage: bool = Field(default=True, description="ask for token usage")
    # What a million tokens cost, for the keys' spend budgets (PROXY_KEYS, docs/budgets.md).
    input_price_per_mtok: Price = Field(default=0.0, description="price of 1M input tokens")
    output_price_per_mtok: Price = Field(default=0.0, description="price of 1M output tokens")
    reasoning: ReasoningEffort | None = Field(
        default=None, description="default reasoning effort; None: the upstream's default"
    )
    # Issue 30: race a second replica when the first is slow to its first part. `auto` follows
    # the model's recent time to first part (docs/configuration.md); with one replica there is
    # nothing to race, so it is off there whatever is set.
    hedge_after: Annotated[float, Field(gt=0, allow_inf_nan=False)] | Literal["auto"] | None = (
        Field(default="auto", description="seconds without a part before a hedge; auto; null: off")
    )

    @model_validator(mode="before")
    @classmethod
    def _url_first(cls, data: Any) -> Any:
        """`url` is the first of `urls`: consumers read `urls` alone."""
        urls = data.get("urls", ()) if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("url") and isinstance(urls, list | tuple):
            return {**data, "urls": (data["url"], *urls)}
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("urls")
    @classmethod
    def _urls(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_http_url(value) for value in values)


# The name tests and callers knew PROXY_MODELS' items by: the same class.
ModelEntry = ModelSpec


def _model_default(name: str) -> Any:
    return ModelSpec.model_fields[name].default


@dataclass(slots=True, frozen=True)
class Timeouts:
    """Seconds: to connect, from the request to the first delta, between two deltas, and
    for the whole stream."""

    connect: float
    first_token: float
    idle: float
    total: float


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    """Attempts before the commit point: `retries` more after the first, backing off."""

    retries: int
    backoff: float
    max_retry_after: float


@dataclass(slots=True, frozen=True)
class RequestLimits:
    """What one request may carry, and one upstream event may take."""

    max_body_bytes: int
    max_prompt_chars: int
    max_event_bytes: int


class KeyLimits(BaseModel):
    """A named key's budgets (None: no limit): tokens are input + output; spend is in the
    currency of the models' prices. Declared once: PROXY_KEYS' items (KeyEntry) extend it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="input + output tokens per UTC minute"
    )
    tokens_per_day: int | None = Field(
        default=None, ge=1, description="input + output tokens per UTC day"
    )
    spend_per_day: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="spend per UTC day"
    )
    spend_per_month: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="spend per calendar month"
    )

    @property
    def any(self) -> bool:
        return any(limit is not None for limit in self.limits())

    def limits(self) -> tuple[int | float | None, ...]:
        """Every limit, in the order the fields are declared."""
        return tuple(getattr(self, name) for name in KeyLimits.model_fields)


@dataclass(slots=True, frozen=True)
class ClientKeySpec:
    """One item of PROXY_KEYS: the name logs, metrics and traces show, the key's SHA-256
    (a raw key is hashed at once: nothing keeps it), and its budgets."""

    name: str
    key_sha256: bytes = field(repr=False)
    limits: KeyLimits = field(default_factory=KeyLimits)


@dataclass(slots=True, frozen=True)
class AdmissionPolicy:
    """Who may stream and how much (proxy/guards.py)."""

    client_keys: tuple[str, ...]
    max_concurrent_streams: int
    rate_limit: str | None
    max_streams_per_key: int | None
    fail_closed: bool
    redis_url: str | None
    # A proxy that dies holding per-key stream slots in Redis must not block a key for ever.
    slot_expiry: int
    # PROXY_KEYS: named keys, each with its budgets (proxy/admission/budgets/).
    named_keys: tuple[ClientKeySpec, ...] = ()
    budget_fail_open: bool = False
    # PROXY_REDIS_TIMEOUT: an admission's Redis answering slower than this is down.
    redis_timeout: float = 2.0


@dataclass(slots=True, frozen=True)
class ResumePolicy:
    """PROXY_RESUME: how long and how much of a stream is kept, and how long a reader waits
    for its next write before deciding its producer is gone."""

    ttl: float
    max_bytes: int
    follow_timeout: float
    redis_url: str | None


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


class KeyEntry(KeyLimits):
    """One item of PROXY_KEYS (or of `keys` in the PROXY_CONFIG file): a key and its budgets."""

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:@-]+$",
        description="what logs, metrics and traces call the key",
    )
    key: Secret | None = Field(default=None, min_length=1, description="the key itself")
    key_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-fA-F]{64}$", description="the hex SHA-256 of the key"
    )

    @model_validator(mode="after")
    def _one_key(self) -> KeyEntry:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError(f"key {self.name!r} needs exactly one of `key` and `key_sha256`")
        return self

    def digest(self) -> bytes:
        if self.key is not None:
            return hashlib.sha256(self.key.get_secret_value().encode()).digest()
        assert self.key_sha256 is not None
        return bytes.fromhex(self.key_sha256)

    def spec(self) -> ClientKeySpec:
        limits = KeyLimits(**{name: getattr(self, name) for name in KeyLimits.model_fields})
        return ClientKeySpec(self.name, self.digest(), limits)


def _json_list(of: str) -> BeforeValidator:
    """PROXY_MODELS and PROXY_KEYS hold JSON text; the PROXY_CONFIG file holds a list."""

    def decode(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            message = "must be a JSON list of {of}"
            raise PydanticCustomError("json_list", message, {"of": of}) from None

    return BeforeValidator(decode)


def _unique_keys(entries: tuple[KeyEntry, ...] | None) -> tuple[KeyEntry, ...] | None:
    if entries:
        names = [entry.name for entry in entries]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"key names must be unique: {', '.join(twice)}")
        digests: dict[bytes, str] = {}
        for entry in entries:
            other = digests.setdefault(entry.digest(), entry.name)
            if other != entry.name:
                raise ValueError(f"keys {other!r} and {entry.name!r} are the same key")
    return entries


def _unique_names(entries: tuple[ModelSpec, ...] | None) -> tuple[ModelSpec, ...] | None:
    if entries is not None:
        if not entries:
            raise ValueError("must list at least one model")
        names = [entry.name for entry in entries]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique: {', '.join(duplicates)}")
        for index, entry in enumerate(entries):
            # Only the PROXY_UPSTREAM_* model may be the built-in fake upstream.
            if not entry.urls:
                where = f"{index}.urls"
                raise setting_error("PROXY_MODELS", "needs `url` or `urls`", where)
    return entries


ModelList = Annotated[
    tuple[ModelSpec, ...] | None, NoDecode, _json_list("models"), AfterValidator(_unique_names)
]
KeyList = Annotated[
    tuple[KeyEntry, ...] | None, NoDecode, _json_list("keys"), AfterValidator(_unique_keys)
]


def _optional_http_url(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    return _http_url(value)


def _http_url_list(value: str | None) -> str | None:
    return ",".join(_http_url(url) for url in _split(value)) or None


def _rate_limit(value: str | None) -> str | None:
    if not value:
        return None
    try:
        limits.parse(value)
    except ValueError:
        raise ValueError("must look like 60/minute or 10/second") from None
    return value


def _redis_url(value: str | None) -> str | None:
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return value or None


def _lower_case(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


OptionalHTTPURL = Annotated[str | None, AfterValidator(_optional_http_url)]
HTTPURLList = Annotated[str | None, AfterValidator(_http_url_list)]  # comma-separated
RateLimit = Annotated[str | None, AfterValidator(_rate_limit)]
RedisURL = Annotated[str | None, AfterValidator(_redis_url)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROXY_",
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    upstream_url: OptionalHTTPURL = None
    # The one model of PROXY_UPSTREAM_*: ModelSpec's fields, with its defaults.
    upstream_dialect: DialectName = _model_default("dialect")
    upstream_api_key: Secret | None = None
    upstream_model: str | None = None
    upstream_max_tokens: int = Field(default=_model_default("max_tokens"), ge=1)
    upstream_stream_usage: bool = _model_default("stream_usage")
    # Several models at once (ModelSpec items); replaces the PROXY_UPSTREAM_* model.
    model_list: ModelList = Field(default=None, validation_alias="PROXY_MODELS")

    connect_timeout: float = Field(default=5.0, gt=0)
    first_token_timeout: float = Field(default=60.0, gt=0)
    idle_timeout: float = Field(default=30.0, gt=0)
    total_timeout: float = Field(default=600.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    retry_backoff: float = Field(default=0.25, ge=0)
    max_retry_after: float = Field(default=5.0, ge=0)

    max_concurrent_streams: int = Field(default=1000, ge=1)
    # A few images as data: URLs (a 2 MB photo is 2.7 MB in base64); larger ones go as links.
    max_body_bytes: int = Field(default=10_485_760, ge=1024)
    max_prompt_chars: int = Field(default=200_000, ge=1)
    # One upstream event (SSE) or line (NDJSON); bounds a stream's memory.
    max_event_bytes: int = Field(default=1_048_576, ge=1024)

    # Named client keys with budgets (KeyEntry items; docs/budgets.md).
    key_list: KeyList = Field(default=None, validation_alias="PROXY_KEYS")
    # Serve budgeted keys without their budgets while Redis is down (default: refuse, 503).
    budget_fail_open: bool = False

    # Public deployment (docs/deployment.md).
    api_keys: Secret | None = None
    cors_origins: str | None = None
    rate_limit: RateLimit = None
    max_streams_per_key: int | None = Field(default=None, ge=1)
    redis_url: RedisURL = None
    # Seconds an admission's Redis (limits, slots, budgets) may take (docs/configuration.md).
    redis_timeout: float = Field(default=2.0, gt=0, le=30)
    rate_limit_fail_closed: bool = False
    upstream_urls: HTTPURLList = None
    replica_cooldown: float = Field(default=10.0, ge=0)
    # The share of requests that may be hedged over a sliding minute (issue 30).
    hedge_budget: float = Field(default=0.1, ge=0, le=1)

    # The chat page at GET / (docs/api.md); off for API-only deployments.
    chat_page: bool = True

    # GET /metrics (Prometheus); false removes the endpoint and records nothing.
    metrics: bool = True

    # Traces (docs/tracing.md): the standard OTEL_* variables, read with the rest; None is off.
    tracing: TracingPolicy | None = Field(default_factory=lambda: _tracing_from_environment())

    # Output formats and resumable streams (issue 13).
    sse_keepalive: float = Field(default=15.0, gt=0)
    resume: bool = False
    resume_ttl: float = Field(default=600.0, gt=0)
    resume_max_bytes: int = Field(default=1_048_576, ge=1024)

    workers: int = Field(default=1, ge=1, le=64)
    # On SIGTERM, open streams get this long to finish before they are aborted (SPEC §5b).
    shutdown_grace: int = Field(default=30, ge=0)
    # Outlasts common load balancers' 60 s idle timeout, so the proxy never closes a kept-alive
    # connection a balancer is about to reuse (SPEC §5b; uvicorn's default is 5 s).
    keepalive_timeout: int = Field(default=75, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Annotated[LogLevel, BeforeValidator(_lower_case)] = "info"
    log_format: LogFormat = "json"

    @model_validator(mode="after")
    def _keys_apart(self) -> Settings:
        _check_named_keys(self)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The arguments, the environment, `.env`, then the PROXY_CONFIG file: the first that
        sets a value wins."""
        path = config_file_path({**_variables(dotenv_settings), **_variables(env_settings)})
        config_file = () if path is None else (ConfigFileSource(settings_cls, path),)
        return (init_settings, env_settings, dotenv_settings, *config_file, file_secret_settings)

    # The values the code is given, each made once from the fields above.

    @cached_property
    def cors_origin_list(self) -> tuple[str, ...]:
        return _split(self.cors_origins)

    @cached_property
    def models(self) -> tuple[ModelSpec, ...]:
        """The configured models; the first one is the default."""
        return _model_table(self)

    @cached_property
    def timeouts(self) -> Timeouts:
        return Timeouts(
            self.connect_timeout, self.first_token_timeout, self.idle_timeout, self.total_timeout
        )

    @cached_property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.retries, self.retry_backoff, self.max_retry_after)

    @cached_property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(self.max_body_bytes, self.max_prompt_chars, self.max_event_bytes)

    @cached_property
    def admission(self) -> AdmissionPolicy:
        return _admission_policy(self)

    @cached_property
    def resume_policy(self) -> ResumePolicy | None:
        """None unless PROXY_RESUME is on."""
        if not self.resume:
            return None
        # A live producer writes at least every idle timeout (or ends the stream): silence
        # longer than that, with some slack, means it is gone.
        follow_timeout = self.idle_timeout + 5.0
        return ResumePolicy(self.resume_ttl, self.resume_max_bytes, follow_timeout, self.redis_url)


def _variables(source: PydanticBaseSettingsSource) -> dict[str, str | None]:
    return dict(source.env_vars) if isinstance(source, EnvSettingsSource) else {}


def _check_named_keys(settings: Settings) -> None:
    """A key in both PROXY_KEYS and PROXY_API_KEYS would have two identities; budgets need
    one count for every worker."""
    plain = _split(settings.api_keys.get_secret_value() if settings.api_keys else None)
    digests = {hashlib.sha256(key.encode()).digest() for key in plain}
    for entry in settings.key_list or ():
        if entry.digest() in digests:
            raise setting_error("PROXY_KEYS", f"key {entry.name!r} is also in PROXY_API_KEYS")
    budgeted = any(entry.spec().limits.any for entry in settings.key_list or ())
    if budgeted and settings.workers > 1 and settings.redis_url is None:
        # Each worker would keep its own counts: a key could spend its budget once per worker.
        raise setting_error("PROXY_KEYS", "budgets with PROXY_WORKERS > 1 need PROXY_REDIS_URL")


def _tracing_from_environment(env_file: str | None = None) -> TracingPolicy | None:
    """The OTEL_* variables: the environment's, over those of `env_file` as PROXY_* ones."""
    environment: Mapping[str, str | None] = os.environ
    if env_file is not None and os.path.isfile(env_file):
        in_file = dotenv_values(env_file, encoding="utf-8")
        environment = {**{k: v for k, v in in_file.items() if k.startswith("OTEL_")}, **os.environ}
    try:
        return tracing_policy({k: v for k, v in environment.items() if v is not None})
    except TracingSettingError as exc:
        raise ConfigError(exc.variable, exc.message) from None


def _model_table(settings: Settings) -> tuple[ModelSpec, ...]:
    if settings.model_list is not None:
        return settings.model_list
    urls = _split(settings.upstream_urls)
    return (
        ModelSpec(
            name=settings.upstream_model or DEFAULT_MODEL_NAME,
            dialect=settings.upstream_dialect,
            urls=urls or ((settings.upstream_url,) if settings.upstream_url else ()),
            api_key=settings.upstream_api_key,
            upstream_model=settings.upstream_model,
            max_tokens=settings.upstream_max_tokens,
            stream_usage=settings.upstream_stream_usage,
        ),
    )


def _admission_policy(settings: Settings) -> AdmissionPolicy:
    keys = settings.api_keys.get_secret_value() if settings.api_keys else None
    return AdmissionPolicy(
        client_keys=_split(keys),
        max_concurrent_streams=settings.max_concurrent_streams,
        rate_limit=settings.rate_limit,
        max_streams_per_key=settings.max_streams_per_key,
        fail_closed=settings.rate_limit_fail_closed,
        redis_url=settings.redis_url,
        slot_expiry=int(settings.total_timeout) + 60,
        named_keys=tuple(entry.spec() for entry in settings.key_list or ()),
        budget_fail_open=settings.budget_fail_open,
        redis_timeout=settings.redis_timeout,
    )


def load_settings(**overrides: Any) -> Settings:
    """Read the arguments, the environment, `.env` and the PROXY_CONFIG file; raise
    ConfigError about the first bad value."""
    given = {key: value for key, value in overrides.items() if value is not None}
    given.setdefault("tracing", _tracing_from_environment(ENV_FILE))
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise _config_error(exc.errors()[0], set(given)) from None


def _config_error(error: ErrorDetails, given: set[str]) -> ConfigError:
    """What the error is about, as data: the variable a validator named (in its context), else
    its field's; PROXY_CONFIG, with the place in the file, when the value came from there."""
    field, *place = [str(part) for part in error["loc"]] or [""]
    context = error.get("ctx") or {}
    variable = str(context.get("variable") or _variable_of(field))
    where = str(context.get("where") or ".".join(place))
    message = error["msg"].removeprefix("Value error, ")
    field = _field_of(variable)
    in_file = None if field in given else _file_values_of(variable)
    if in_file is not None and field in in_file:
        return ConfigError(CONFIG_VARIABLE, message, file_place(in_file, field, where))
    return ConfigError(variable, message, where)


def _variable_of(field: str) -> str:
    return field.upper() if field.startswith("PROXY_") else f"PROXY_{field.upper()}"


def _field_of(variable: str) -> str:
    alias = {"PROXY_MODELS": "model_list", "PROXY_KEYS": "key_list"}
    return alias.get(variable) or variable.removeprefix("PROXY_").lower()


def _file_values_of(variable: str) -> dict[str, Any] | None:
    """The PROXY_CONFIG file's settings, unless `variable` is set in the environment or
    `.env` (whose value was then the one validated)."""
    environment: dict[str, str | None] = {}
    if os.path.isfile(ENV_FILE):
        environment.update(dotenv_values(ENV_FILE, encoding="utf-8"))
    environment.update(os.environ)
    environment = {name.upper(): value for name, value in environment.items()}
    path = config_file_path(environment)
    if path is None or variable in environment:
        return None
    return read_config_file(path, Settings)
