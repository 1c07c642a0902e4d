"""Typed configs: nested dataclasses loaded from YAML, with ``key.sub=value`` overrides.

Every default lives in the dataclass definitions; a YAML preset or file only overrides them, and
CLI flags override the YAML. Unknown keys are errors that name the valid keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type ``tp`` (dataclasses, Optional, list, scalars)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(f"{where}: cannot read {value!r} as {tp}: {'; '.join(errors)}")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool) or (tp is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{where}: expected {'an integer' if tp is int else 'a number'}, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {'an integer' if tp is int else 'a number'}, got {value!r}") from None
    if tp is str:
        if value is None:
            raise ValueError(f"{where}: expected a string, got None")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise ValueError naming the valid ones."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid keys: {', '.join(names)}")
    data = {k: _with_section_default(cls, k, v) for k, v in data.items()}
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _with_section_default(cls: type, name: str, value: Any) -> Any:
    """A partial nested section (a dict) filled in from the field's own default, not only from the nested class's
    defaults: a ``default_factory`` may set other values (extract-poses' person filter does)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if not isinstance(value, dict) or field.default_factory is dataclasses.MISSING:
        return value
    default = field.default_factory()
    return deep_merge(dataclasses.asdict(default), value) if dataclasses.is_dataclass(default) else value


def to_dict(obj: Any) -> dict:
    """Plain nested dict of a config dataclass (YAML/JSON-safe)."""
    return dataclasses.asdict(obj)


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """``set_dotted(d, "pose.device", "cuda")`` sets ``d["pose"]["device"]``, creating sub-dicts."""
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted}: {p} is not a section")
    node[leaf] = value


def parse_overrides(items: list[str]) -> dict:
    """``["pose.device=cuda", "filter.max_persons=2"]`` -> nested dict (values parsed as YAML scalars)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({yaml_problem(err)})") from None
        set_dotted(out, key.strip(), value)
    return out


def deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = deep_merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error as one line: what is wrong and where (line and column, counted from 1)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping at top level")
    return data


def load_preset_or_file(name_or_path: str, *, package: str, presets: tuple[str, ...]) -> dict:
    """A preset shipped in ``<package>/configs/<name>.yaml`` (one of ``presets``) or a YAML path -> dict."""
    if name_or_path in presets:
        from importlib import resources

        return load_yaml(Path(str(resources.files(package) / "configs" / f"{name_or_path}.yaml")))
    if not Path(name_or_path).is_file():
        raise FileNotFoundError(f"--config {name_or_path!r} is neither a preset ({', '.join(presets)}) nor a file")
    return load_yaml(name_or_path)


def load_config(cls: type[T], *layers: dict) -> T:
    """Merge dict layers in order (preset/YAML, then CLI overrides) and build ``cls``."""
    merged: dict = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    return from_dict(cls, merged)
