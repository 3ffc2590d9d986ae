"""Generic machinery: YAML -> nested dataclasses with validation that names the bad key.

A config is a tree of dataclasses. Each command defines its own top-level dataclass whose fields
are sections (``data``, ``train``, ...); every section lives in its own module. Presets are YAML
files under ``configs/``; ``--set train.epochs=5`` overrides any leaf with a YAML-parsed value.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar, get_args, get_origin, get_type_hints

import yaml

from fasterseg.errors import UserError

T = TypeVar("T")


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping; a missing, empty or bad file is a ``UserError``.

    An empty file (or one with only comments, or ``{}``) is refused rather than read as "all
    defaults": the defaults are the paper's full-scale settings, so a config that was truncated
    or not yet written would silently start hours of Cityscapes-size training.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"config {p} is not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"config {p} is not a text (UTF-8) YAML file") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits
        raise UserError(f"config {p} holds an unreadable value ({str(e)[:80]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config {p} must be a mapping at the top level")
    base = data.pop("_base_", None)
    if not data and not base:
        raise UserError(
            f"config {p} is empty: it would run the paper's full-scale defaults; write the "
            "settings you want, or use a preset such as synthetic_tiny"
        )
    if base:
        parent = load_yaml(p.parent / base)
        data = _merge(parent, data)
    return data


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` strings (value parsed as YAML) to a nested dict, in place."""
    for item in overrides or ():
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config: {where} must be a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if errors else f"config: bad value for {where}: {value!r}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise UserError(f"config: {where} must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config: {where} must be a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise UserError(f"config: {where} needs {len(args)} values, got {value!r}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        conv = [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(conv) if origin is tuple else conv
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config: {where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config: {where} must be true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e9" / "5e-4" (no dot) as strings
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config: {where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UserError(f"config: {where} must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"config: {where} must be a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types name the key."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise UserError(
            f"config: unknown key {prefix}{unknown[0]} (valid keys: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            key = f"{where}.{f.name}" if where else f.name
            kwargs[f.name] = _convert(hints[f.name], data[f.name], key)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict (tuples become lists) for YAML/JSON dumps."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_config(
    cls: type[T], path: str | os.PathLike | None = None, overrides: Iterable[str] = ()
) -> T:
    """Preset YAML (optional) + ``--set`` overrides -> validated dataclass ``cls``."""
    data = load_yaml(path) if path else {}
    apply_overrides(data, overrides)
    return from_dict(cls, data)
