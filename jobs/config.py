"""Config files: YAML read with ``yaml.safe_load``, ``--set key=value`` overrides, pydantic
validation with ``extra="forbid"`` so a misspelt key is an error, not a silent default."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import yaml
from leanscore.compression.errors import LeanscoreError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(LeanscoreError, ValueError):
    """A config file or override is unreadable or invalid; the message names the key."""


def packaged_config(name: str | Path) -> Path:
    """The path of a config shipped with leanscore (``pricing.yaml``, ``recipes/x.yaml``)."""
    return Path(str(files("leanscore.conf").joinpath(str(name))))


def find_config(path: str | Path) -> Path:
    """``path`` as given when it exists; else, for ``conf/NAME`` or a bare ``NAME``, the
    config of that name shipped with leanscore, so the documented commands run outside the
    repository too. A path that is neither stays as given (the caller reports it missing)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    relative = Path(*path.parts[1:]) if path.parts[:1] == ("conf",) else path
    shipped = packaged_config(relative)
    return shipped if shipped.is_file() else path


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = find_config(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys, found {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; the value is parsed as YAML (numbers, true, lists)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} must look like key=value (for example batch_size=8192)"
            )
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        if not all(keys):
            raise ConfigError(f"override {item!r} has an empty key")
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a mapping")
            node = child
        node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def load_config(model: type[M], path: str | Path, overrides: list[str] | None = None) -> M:
    data = apply_overrides(read_yaml(path), overrides or [])
    return validate(model, data, source=str(path))


def validate(model: type[M], data: dict[str, Any], *, source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            + (
                f" (got {e['input']!r})"
                if e["type"] != "missing" and not isinstance(e["input"], dict)
                else ""
            )
            for e in err.errors()
        )
        raise ConfigError(f"{source}: {problems}") from err
