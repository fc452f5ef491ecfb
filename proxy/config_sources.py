"""Where settings come from besides the environment, and the one error bad ones raise.

`PROXY_CONFIG` names a YAML file holding what the PROXY_* variables hold, under the same
names without the prefix (`idle_timeout: 30`), with `models` and `keys` for PROXY_MODELS and
PROXY_KEYS as lists rather than JSON text. pydantic-settings reads it (YamlConfigSettingsSource);
this module only adds what a deployed file needs: a missing file or an unknown setting is an
error (a misspelt name would otherwise be ignored in silence), and a secret may be written as
`{env: NAME}`, a reference to the environment variable holding it (docs/configuration.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, YamlConfigSettingsSource

CONFIG_VARIABLE = "PROXY_CONFIG"
# The file's names for the two settings whose variables are not their field's name.
FILE_NAMES = {"models": "model_list", "keys": "key_list"}
# Read from the OTEL_* variables only (docs/tracing.md), never from the file.
NOT_IN_FILE = frozenset({"tracing"})


class ConfigError(Exception):
    """Bad configuration, printed as one line: `variable [where]: message`.

    `variable` is what the line is about (PROXY_IDLE_TIMEOUT, PROXY_MODELS, PROXY_CONFIG for a
    value read from the file, OTEL_...); `where` is the place inside it (`0.dialect`,
    `models.1 (smart).dialect`). Neither, nor `message`, ever holds a secret's value.
    """

    def __init__(self, variable: str, message: str, where: str = "") -> None:
        super().__init__(variable, message, where)
        self.variable = variable
        self.message = message
        self.where = where

    def __str__(self) -> str:
        where = f" [{self.where}]" if self.where else ""
        return f"{self.variable}{where}: {self.message}"


def setting_error(variable: str, message: str, where: str = "") -> PydanticCustomError:
    """A validator's error about `variable` (not the field it was raised in) and the place
    in it, as data: the error's context."""
    context = {"variable": variable, "message": message, "where": where}
    return PydanticCustomError("setting", "{message}", context)


def file_place(values: dict[str, Any], field: str, where: str) -> str:
    """Where in the file a value is: `models.1 (smart).dialect`, an entry named as well as
    counted (a name is never a secret; a key is never shown)."""
    parts = [next((n for n, f in FILE_NAMES.items() if f == field), field)]
    parts += where.split(".") if where else []
    entries = values.get(field)
    if len(parts) > 1 and parts[1].isdigit() and isinstance(entries, list):
        index = int(parts[1])
        entry = entries[index] if index < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name:
            parts[1] = f"{index} ({name})"
    return ".".join(parts)


def secret_from_reference(value: Any) -> Any:
    """`{env: NAME}` is the value of the environment variable NAME; anything else as given."""
    if not isinstance(value, dict) or set(value) != {"env"}:
        return value
    name = value["env"]
    if not isinstance(name, str) or not name:
        raise PydanticCustomError("env_reference", "`env` must name an environment variable")
    if name not in os.environ:
        raise PydanticCustomError(
            "env_reference", "refers to {name}, which is not set", {"name": name}
        )
    return os.environ[name]


def config_file_path(environment: dict[str, str | None]) -> Path | None:
    """PROXY_CONFIG's file, from the environment or `.env` (case as pydantic-settings reads it)."""
    path = environment.get(CONFIG_VARIABLE.lower()) or environment.get(CONFIG_VARIABLE)
    return Path(path) if path else None


def read_config_file(path: Path, settings_cls: type[BaseSettings]) -> dict[str, Any]:
    """The file's settings under their field names; ConfigError for anything else."""
    return ConfigFileSource(settings_cls, path).yaml_data


class ConfigFileSource(YamlConfigSettingsSource):
    """The PROXY_CONFIG file: pydantic-settings' YAML source, strict about what it holds."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        if not path.is_file():
            raise ConfigError(CONFIG_VARIABLE, f"no such file: {path}")
        self.settings_fields = frozenset(settings_cls.model_fields) - NOT_IN_FILE
        super().__init__(settings_cls, yaml_file=path, yaml_file_encoding="utf-8")

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except Exception as exc:  # PyYAML's errors: a line and column, never a value
            problem = getattr(exc, "problem", None) or type(exc).__name__
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise ConfigError(CONFIG_VARIABLE, f"not valid YAML: {problem}{at}") from None
        if not isinstance(data, dict):
            raise ConfigError(CONFIG_VARIABLE, "must be a mapping of settings")
        return {self._field_name(str(name)): value for name, value in data.items()}

    def _field_name(self, name: str) -> str:
        field = FILE_NAMES.get(name, name)
        if field in FILE_NAMES.values() and name == field:
            field = ""  # model_list, key_list: only their documented names
        if field not in self.settings_fields:
            known = "see docs/configuration.md"
            raise ConfigError(CONFIG_VARIABLE, f"unknown setting `{name}` ({known})")
        return field
