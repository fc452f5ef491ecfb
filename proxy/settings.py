"""All configuration, read once at start-up; the only module that reads the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DialectName = Literal["openai", "openai-completions", "ollama", "tgi", "anthropic"]
LogFormat = Literal["json", "text"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]

DEFAULT_MODEL_NAME = "default"


class ConfigError(Exception):
    """Bad configuration: the message names the variable and is printed as one line."""


@dataclass(slots=True, frozen=True)
class ModelSpec:
    """One model clients may ask for, and where and how to reach it.

    An empty `urls` means the built-in fake upstream, started with the app.
    """

    name: str
    dialect: DialectName
    urls: tuple[str, ...]
    api_key: SecretStr | None
    upstream_model: str | None
    max_tokens: int

    def __repr__(self) -> str:
        # SecretStr already hides the key; say so explicitly to anyone reading a log.
        return (
            f"ModelSpec(name={self.name!r}, dialect={self.dialect!r}, urls={self.urls!r}, "
            f"api_key={'**********' if self.api_key else None}, "
            f"upstream_model={self.upstream_model!r}, max_tokens={self.max_tokens})"
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROXY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    upstream_url: str | None = None
    upstream_dialect: DialectName = "openai"
    upstream_api_key: SecretStr | None = None
    upstream_model: str | None = None
    upstream_max_tokens: int = Field(default=4096, ge=1)

    connect_timeout: float = Field(default=5.0, gt=0)
    first_token_timeout: float = Field(default=60.0, gt=0)
    idle_timeout: float = Field(default=30.0, gt=0)
    total_timeout: float = Field(default=600.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    retry_backoff: float = Field(default=0.25, ge=0)
    max_retry_after: float = Field(default=5.0, ge=0)

    max_concurrent_streams: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_prompt_chars: int = Field(default=200_000, ge=1)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: LogLevel = "info"
    log_format: LogFormat = "json"

    @field_validator("upstream_url")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def models(self) -> tuple[ModelSpec, ...]:
        """The configured models; the first one is the default."""
        return (
            ModelSpec(
                name=self.upstream_model or DEFAULT_MODEL_NAME,
                dialect=self.upstream_dialect,
                urls=(self.upstream_url,) if self.upstream_url else (),
                api_key=self.upstream_api_key,
                upstream_model=self.upstream_model,
                max_tokens=self.upstream_max_tokens,
            ),
        )


def load_settings(**overrides: Any) -> Settings:
    """Read the environment and `.env`; raise ConfigError naming the first bad variable."""
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "configuration"
        raise ConfigError(f"PROXY_{field.upper()}: {error['msg']}") from None
