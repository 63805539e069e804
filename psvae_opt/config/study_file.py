"""A whole study file: :class:`Config`, read from TOML (with ``--set section.key=value``
overrides applied to the parsed tables before validation, so they obey the same rules) and
written back as TOML that reads back unchanged.

A study file has one table per section (``[data]``, ``[model]``, ``[loss]``, ``[train]``,
``[study]``, ``[stage1]``, ``[stage2]``, ``[slurm]``); every key has a default, unknown keys and wrong
types are refused with the key path named.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psvae_opt.config.schema import (
    DataConfig,
    LossConfig,
    ModelConfig,
    Stage1Config,
    Stage2Config,
    StudyConfig,
    TrainConfig,
)
from psvae_opt.config.slurm import SlurmConfig
from psvae_opt.errors import ConfigError


@dataclass(frozen=True)
class Config:
    """A whole study file."""

    study: StudyConfig = field(default_factory=StudyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


def _convert(value: Any, kind: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``kind`` and convert it (lists to tuples)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # TOML has inf and nan; no key of a study takes them
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(kind) in (typing.Union, types.UnionType):
        for arm in typing.get_args(kind):  # the first type the value fits
            try:
                return _convert(value, arm, key)
            except ConfigError:
                pass
        names = " or ".join(
            f"a list of {typing.get_args(a)[0].__name__}" if typing.get_origin(a) is tuple else a.__name__
            for a in typing.get_args(kind)
        )
        raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")
    elif typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        if isinstance(value, list):
            return tuple(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
        kind_name = f"a list of {item.__name__}"
        raise ConfigError(f"{key}: expected {kind_name}, got {type(value).__name__} {value!r}")
    raise ConfigError(f"{key}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__} {value!r}")


def _build(cls: type, table: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in known:
            raise ConfigError(f"{path}: unknown key (known: {', '.join(sorted(known))})")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a table [{path}], got {value!r}")
            kwargs[key] = _build(hints[key], value, path)
        else:
            kwargs[key] = _convert(value, hints[key], path)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as TOML, else kept as a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.max_epochs=5")
    dotted, raw = text.split("=", 1)
    keys = [k.strip() for k in dotted.split(".")]
    if len(keys) != 2 or not all(keys):
        raise ConfigError(f"--set {text!r}: the key must be section.key, e.g. data.path")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return keys, value


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a study file (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    table: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: study file not found") from None
        except IsADirectoryError:
            raise ConfigError(
                f"{path}: a folder, not a study file; give the TOML file (e.g. studies/demo.toml)"
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not a UTF-8 text file (byte {exc.start}); save the study file as UTF-8"
            ) from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the study file ({exc.strerror or exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for text in overrides:
        (section, key), value = parse_override(text)
        sub = table.setdefault(section, {})
        if not isinstance(sub, dict):
            raise ConfigError(f"--set {text!r}: {section} is not a table")
        sub[key] = value
    where = f"{path}: " if path is not None else ""
    try:
        return _build(Config, table, "")
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


def load_config_text(text: str, where: str) -> Config:
    """A configuration written by :func:`dump_config` (a trial's ``config`` attribute, a run's config.toml)."""
    try:
        return _build(Config, tomllib.loads(text), "")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: its configuration is not valid TOML ({exc})") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# TOML basic strings: these characters have short escapes; other control characters take \uXXXX.
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string that reads back identical, whatever it holds (quotes,
    backslashes, newlines, control characters): a path or a name may hold any of them."""
    out = []
    for char in text:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:  # TOML allows no other control character raw
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_config(config: Config) -> str:
    """Write a :class:`Config` as TOML that :func:`load_config` reads back unchanged."""
    lines = []
    for section in dataclasses.fields(config):
        lines.append(f"[{section.name}]")
        for key, value in dataclasses.asdict(getattr(config, section.name)).items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def replace(config: Config, **sections: Mapping[str, Any]) -> Config:
    """Return ``config`` with some keys of some sections changed, validated again."""
    changed = {name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()}
    return dataclasses.replace(config, **changed)
