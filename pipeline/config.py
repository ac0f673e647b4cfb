"""Recipes: YAML files loaded into frozen, typed dataclasses, with strict keys and types.

    cfg = load_config(GenerateConfig, "recipes/teachers/qwq-32b.yaml", ["sampling.n=4"])

Defaults live only in the dataclasses. An unknown key is an error naming its full dotted path, the file and
line, and the closest valid key; a value of the wrong type is an error naming the same. Command-line overrides
(`a.b=value`, the value read as YAML) go through the same checks. Fields typed `dict[str, Any]` (the
`trainer:` block for `trl.SFTConfig`, the `engine:` block for vLLM) are passed on unchanged: their own
libraries validate them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from pipeline.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A recipe or override that does not fit its dataclass; `key` is the dotted path it is about, if any."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


Where = typing.Callable[[str], str]


def check_keys(
    block: dict[str, Any],
    valid: list[str] | set[str],
    prefix: str,
    owner: str,
    where: Where = lambda key: "the recipe",
) -> None:
    """Refuse keys of a pass-through block (`engine:`, `trainer:`) that its library does not take."""
    for key in block:
        if key not in valid:
            full = f"{prefix}.{key}"
            close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
            hint = f"; did you mean '{prefix}.{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown key '{full}' in {where(full)}: not an argument of {owner}{hint}", key=full
            )


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` as a float (YAML 1.1 wants `1.0e-5`, users write `1e-5`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def _key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    """Key path (`a.b`, `steps[2].timeout`) -> 1-based line number, read from the YAML node tree."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[path] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{prefix}[{i}]"] = item.start_mark.line + 1
            lines.update(_key_lines(item, f"{prefix}[{i}]"))
    return lines


def read_recipe(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The mapping in a YAML file and the line of each key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror}") from None
    try:
        data = parse_yaml(text)
        lines = _key_lines(yaml.compose(text, Loader=_Loader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, got {type(data).__name__}")
    return data, lines


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is read as YAML (`0.7`, `true`, `[1, 2]`, `null`)."""
    key, sep, raw = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {override!r} is not of the form dotted.key=value")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    steps = _override_path(key, override)
    node: Any = data
    for step, following in zip(steps, steps[1:], strict=False):
        node = _child(node, step, following, override)
    last = steps[-1]
    if isinstance(last, int) and not (isinstance(node, list) and last < len(node)):
        raise ConfigError(f"override {override!r}: no list item [{last}] to set", key=key)
    node[last] = value


_PART = re.compile(r"^([^.\[\]]+)((?:\[\d+\])*)$")


def _override_path(key: str, override: str) -> list[str | int]:
    """`steps[6].per_problem` -> ["steps", 6, "per_problem"]: mapping keys and list indices."""
    path: list[str | int] = []
    for part in key.split("."):
        m = _PART.match(part)
        if not m:
            raise ConfigError(f"override {override!r}: '{part}' is not a key or key[index]", key=key)
        path.append(m.group(1))
        path.extend(int(i) for i in re.findall(r"\d+", m.group(2)))
    return path


def _child(node: Any, step: str | int, following: str | int, override: str) -> Any:
    """The mapping or list under `node[step]`, creating a mapping where a key path goes on into nothing."""
    if isinstance(step, int):
        if not isinstance(node, list) or step >= len(node):
            raise ConfigError(f"override {override!r}: no list item [{step}] to change")
        return node[step]
    if not isinstance(node, dict):
        raise ConfigError(f"override {override!r}: '{step}' is inside a list item, not a mapping")
    if node.get(step) is None:
        node[step] = [] if isinstance(following, int) else {}
    child = node[step]
    if not isinstance(child, dict | list):
        raise ConfigError(f"override {override!r}: '{step}' is not a mapping")
    return child


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Load a recipe (or only overrides when `path` is None) into `cls`, checking keys and types.

    A top-level `stage:` key (which stage a recipe is for; see cli.load_stage_config) is not a config field.
    """
    data, lines = read_recipe(path) if path is not None else ({}, {})
    data.pop("stage", None)

    for override in overrides:
        apply_override(data, override)
    overridden = {o.partition("=")[0] for o in overrides}
    return from_dict(cls, data, Source(str(path or "the command line"), lines, overridden))


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a config's values came from (file, line of each key, command-line overrides), for error messages."""

    name: str
    lines: dict[str, int]
    overridden: set[str]

    def where(self, key: str) -> str:
        if any(key == o or key.startswith((o + ".", o + "[")) for o in self.overridden):
            return f"override '{key}=...'"
        line = self.lines.get(key)
        return f"{self.name}:{line}" if line else self.name

    def where_block(self, prefix: str) -> str:
        """Where a block's values came from, for an error about the block as a whole (its own checks): the
        overrides inside it when there are any, since they changed it last, else its recipe line."""
        block = prefix.rstrip(".")
        inside = sorted(o for o in self.overridden if block and o.startswith((prefix, block + "[")))
        if inside:
            return ", ".join(f"override '{o}=...'" for o in inside)
        return self.where(block)


def from_dict(cls: type[T], data: Any, source: Source | str = "<dict>", prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, recursively; raises ConfigError on unknown keys or bad types."""
    if isinstance(source, str):
        source = Source(source, {}, set())
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source.where(prefix.rstrip('.'))}: '{prefix.rstrip('.') or '<root>'}' must be a mapping, "
            f"got {type(data).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            full = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"unknown key '{full}' in {source.where(full)}{hint}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in data:
            raise ConfigError(f"missing required key '{prefix}{name}' in {source.name}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, source, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{source.where_block(prefix)}: {prefix.rstrip('.') or 'recipe'}: {e}") from None


def _describe(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, source: Source, key: str) -> Any:
    """Check `value` against annotation `tp` and convert (nested dataclasses, int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(tp, value, source, key)
    if origin is Literal:
        return _convert_literal(tp, value, source, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, source, key + ".")
    if origin in (list, tuple) or tp in (list, tuple):
        return _convert_sequence(tp, value, source, key)
    if origin is dict or tp is dict:
        return _convert_dict(tp, value, source, key)
    return _convert_scalar(tp, value, source, key)


def _bad(tp: Any, value: Any, source: Source, key: str, expected: str | None = None) -> ConfigError:
    """The error for `value` at `key` not matching `tp` (or what `expected` names), the value shown shortened."""
    shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
    return ConfigError(
        f"{source.where(key)}: '{key}' must be {expected or _describe(tp)}, got {type(value).__name__} {shown}"
    )


def _convert_union(tp: Any, value: Any, source: Source, key: str) -> Any:
    """Optional[X] and X | Y: None where allowed, else the value as the first option it converts to."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:
        return _convert(options[0], value, source, key)
    for arg in options:
        try:
            return _convert(arg, value, source, key)
        except ConfigError:
            continue
    raise _bad(tp, value, source, key, " or ".join(_describe(a) for a in args)) from None


def _convert_literal(tp: Any, value: Any, source: Source, key: str) -> Any:
    """Literal[...]: the value when it is one of the allowed ones."""
    args = typing.get_args(tp)
    if value in args:
        return value
    raise _bad(tp, value, source, key, "one of " + ", ".join(repr(a) for a in args))


def _convert_sequence(tp: Any, value: Any, source: Source, key: str) -> list[Any] | tuple[Any, ...]:
    """list[X] / tuple[X, ...] from a list or tuple, each item converted; a tuple annotation gives a tuple."""
    if not isinstance(value, list | tuple):
        raise _bad(tp, value, source, key)
    args = typing.get_args(tp)
    item = args[0] if args else Any
    items = [_convert(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if typing.get_origin(tp) is tuple or tp is tuple else items


def _convert_dict(tp: Any, value: Any, source: Source, key: str) -> dict[str, Any]:
    """dict[K, V] from a mapping: keys as strings, each value converted."""
    if not isinstance(value, dict):
        raise _bad(tp, value, source, key)
    args = typing.get_args(tp)
    vt = args[1] if len(args) == 2 else Any
    return {str(k): _convert(vt, v, source, f"{key}.{k}") for k, v in value.items()}


def _convert_scalar(tp: Any, value: Any, source: Source, key: str) -> Any:
    """float (from an int too), int, bool, str (from a number too), or any other class the value already is."""
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _bad(tp, value, source, key)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _bad(tp, value, source, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _bad(tp, value, source, key)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # `model: 7` or a revision like `1234` read as a number by YAML
        raise _bad(tp, value, source, key)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _bad(tp, value, source, key)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain data (for printing and manifests); tuples become lists."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
