"""Blocks a recipe passes through to a library (`trainer:` -> trl.SFTConfig, `peft.lora:` -> peft.LoraConfig,
`engine:` -> vllm.EngineArgs), checked against that library's own dataclass before anything starts:

    check_block(cfg.trainer, trl.SFTConfig, "trainer", "trl.SFTConfig", where)

Every key must be a field of the class (else the closest field is suggested), and every value must fit the
field's annotation where that annotation is plain data (bool, int, float, str, None, Literal, Enum, list, dict and
unions of them). The libraries do not check types themselves: `packing: ture` would train with the string
"ture", which is truthy. Annotations naming other classes (a vLLM sub-config, a torch dtype) are left to the
library, which builds them from what it is given.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
from typing import Any, Literal, Union

from pipeline.config import ConfigError, Where, check_keys

_UNKNOWN = object()  # an annotation that cannot be resolved here: the value is not judged


def check_block(
    block: dict[str, Any], cls: type, prefix: str, owner: str, where: Where, exclude: set[str] = frozenset()
) -> None:
    """Refuse keys of `block` that are not fields of dataclass `cls` (nor in `exclude`), and values whose type
    does not fit the field; each error names the recipe line and the field."""
    hints = field_types(cls)
    check_keys(block, set(hints) - set(exclude), prefix, owner, where)
    for key, value in block.items():
        tp = hints[key]
        if tp is _UNKNOWN or _fits(tp, value):
            continue
        full = f"{prefix}.{key}"
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        hint = "; write true or false" if _describe(tp) in ("bool", "bool | None") else ""
        raise ConfigError(
            f"{where(full)}: field '{full}' must be {_describe(tp)} ({owner}), got {type(value).__name__} "
            f"{shown}{hint}",
            key=full,
        )


def field_types(cls: type) -> dict[str, Any]:
    """Each init field of a dataclass -> its resolved annotation (or _UNKNOWN). Resolved one field at a time, in
    the module of the class that declares it, because one unresolvable annotation (vLLM has names imported only
    under TYPE_CHECKING) makes typing.get_type_hints fail for the whole class."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        owner = next((c for c in cls.__mro__ if f.name in getattr(c, "__annotations__", {})), cls)
        holder = types.SimpleNamespace(__annotations__={f.name: f.type})
        try:
            out[f.name] = typing.get_type_hints(holder, globalns=vars(sys.modules[owner.__module__]))[f.name]
        except Exception:  # an annotation this process cannot evaluate: leave the value to the library
            out[f.name] = _UNKNOWN
    return out


def _fits(tp: Any, value: Any) -> bool:
    """Whether `value` (plain YAML data) fits annotation `tp`; True for annotations we cannot judge."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _fits(typing.get_args(tp)[0], value)
    if origin in (Union, types.UnionType):
        return any(_fits(arg, value) for arg in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if tp is type(None) or tp is None:
        return value is None
    if origin in (list, tuple) or tp in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return value in {m.value for m in tp} or value in tp.__members__
    return True  # another class (a library's sub-config, a dtype): the library converts and checks it


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_describe(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    return tp.__name__ if isinstance(tp, type) and origin is None else str(tp).replace("typing.", "")
