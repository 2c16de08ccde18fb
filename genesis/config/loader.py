"""Load and validate `genesis/config/<env>.yaml`.

Pure: no Django. The settings module calls `load_config()` once at start-up; any problem raises
`ConfigError` whose message names the file and the key, so a typo stops the process with something a
person can act on instead of a stack trace deep inside Django.

Expansion: `${VAR}` (required) and `${VAR:-default}` (used when VAR is unset or empty) are replaced
anywhere inside a string value. A value that is exactly one `${…}` expression keeps the expanded text
as a string; the schema then coerces it ("48" → 48.0, "true" → True, "10,25" → [10, 25]).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from genesis.config.redaction import address_shown
from genesis.config.schema import GenesisConfig

CONFIG_DIR = Path(__file__).resolve().parent

ENV_ALIASES = {
    "dev": "dev",
    "development": "dev",
    "staging": "staging",
    "production": "production",
    "prod": "production",
}

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


def normalise_env_name(raw: str) -> str:
    name = ENV_ALIASES.get(raw.strip().lower())
    if name is None:
        allowed = ", ".join(sorted(ENV_ALIASES))
        raise ConfigError(f"GENESIS_ENV={raw!r} is not one of: {allowed}")
    return name


def expand_variables(
    value: Any, *, environ: Mapping[str, str], file: str, key: str = "", used: dict[str, list[str]] | None = None
) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string inside `value`, recursively. `used`, when given,
    collects the variables set in `environ` that each key's value took text from, by key as a refusal names
    it (pydantic's "stages.1" for a list's item): a refused value then names the variable the person set,
    not only a key of a file they never edited."""
    if isinstance(value, str):
        taken: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group("name"), match.group("default")
            current = environ.get(name, "")
            if current != "":
                taken.append(name)
                return current
            if default is not None:
                return default
            raise ConfigError(
                f"{file}: {key or '<root>'}: environment variable {name} is required but not set"
            )

        expanded = _VARIABLE.sub(substitute, value)
        if taken and used is not None:
            used[key] = taken
        return expanded
    if isinstance(value, dict):
        return {
            k: expand_variables(v, environ=environ, file=file, key=f"{key}.{k}" if key else str(k), used=used)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_variables(v, environ=environ, file=file, key=f"{key}.{i}", used=used) for i, v in enumerate(value)]
    return value


def _describe(error: ErrorDetails, *, variables: Mapping[str, list[str]]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: required key is missing"
    # An item of a list the variable held as a whole ("10,abc,100") is found under the list's key.
    parts = key.split(".")
    source = next((variables[prefix] for prefix in (".".join(parts[:n]) for n in range(len(parts), 0, -1))
                   if prefix in variables), [])
    named = f" (from {', '.join(source)})" if source else ""
    # A value may carry a password (a host list's "NAME=user:PW@host"): the refusal is printed and logged.
    given = error.get("input")
    # A list or mapping is masked as the text it prints as: a URL inside it has its password too.
    shown = repr(address_shown(given)) if isinstance(given, str) else address_shown(repr(given))
    return f"{key}{named}: {error['msg']} (got {shown})"


def validate_config(raw: Any, *, file: str, variables: Mapping[str, list[str]] | None = None) -> GenesisConfig:
    """`variables`: the environment variables each key's value was expanded from (expand_variables' `used`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of keys, got {type(raw).__name__}")
    try:
        return GenesisConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(error, variables=variables or {}) for error in exc.errors())
        raise ConfigError(f"{file}: {problems}") from None


def load_config(
    *, env_name: str, environ: Mapping[str, str] | None = None, config_dir: Path = CONFIG_DIR
) -> GenesisConfig:
    environ = os.environ if environ is None else environ
    path = config_dir / f"{normalise_env_name(env_name)}.yaml"
    shown = _display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read the configuration file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{shown}: not valid YAML: {exc}") from None
    used: dict[str, list[str]] = {}
    expanded = expand_variables(raw, environ=environ, file=shown, used=used)
    return validate_config(expanded, file=shown, variables=used)


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
