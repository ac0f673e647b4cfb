"""The harness inside the sandbox: load the answer's code, then call its functions on request, returning plain data.

    python -I -S -B runner.py --serve main.py [SITE_PACKAGES ...]  # fd 3: requests, fd 4: replies (JSON lines)
    python -I -S -B runner.py main.py [SITE_PACKAGES ...]          # a stdin/stdout program, run as is

It runs the program (prelude + answer + setup) as `__main__`, writes `{"ready": true}` on fd 4, then serves:
  {"op": "kinds", "names": [...]}  -> {"kinds": {name: "function" | "object" | "module:NAME" | "value"},
                                      "values": {name: data}}  (the names the program defines)
  {"op": "call", "name": f, "args": data, "kwargs": data} -> {"ok": data} or {"raised": type, "message": str}
and exits at end of input. It never sees a test, an expected value or a success signal: those stay with the
grader (`judge.py`), which compares the plain data it gets back. Anything the program does to this process,
fd 4 included, can only change the data it answers with, never how that data is judged.

The wire format (`encode` / `decode`, shared with the grader) is JSON with tagged containers:
{"$": "tuple" | "set" | "frozenset" | "dict" | "bytes" | "int" | "float" | "complex" | "range" | "iter" | "ref",
"v": ...}. Standard library only: it runs with nothing of `pipeline` reachable.
"""

from __future__ import annotations

import builtins
import itertools
import json
import os
import sys
import types
from typing import Any

REQUESTS, REPLIES = 3, 4
MAX_ITEMS = 1 << 20
"""Items of an iterator an answer returns that are sent (an endless generator stops here)."""
_NUMPY = ("numpy",)
_instances = itertools.count()


class Ref:
    """A global of the program that is not plain data (e.g. a tree built by MBPP's setup code): the grader
    holds only its name and can pass it back as an argument."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<the program's {self.name}>"

    def __bool__(self) -> bool:
        raise TypeError("an object of the answer's has no truth value on the grader's side")


def _float(x: float) -> Any:
    return x if x == x and x not in (float("inf"), float("-inf")) else {"$": "float", "v": repr(x)}


def encode(value: Any, lenient: bool = False) -> Any:
    """`value` as wire data. Strict (grader side): exactly the plain types and Ref. `lenient` (program side):
    subclasses of plain types, numpy scalars, iterators and ranges are turned into their plain values."""
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if value.bit_length() < 63 else {"$": "int", "v": hex(value)}
    if t is float:
        return _float(value)
    if t is list:
        return [encode(v, lenient) for v in value]
    tag = {tuple: "tuple", set: "set", frozenset: "frozenset"}.get(t)
    if tag:
        return {"$": tag, "v": [encode(v, lenient) for v in value]}
    if t is dict:
        return {"$": "dict", "v": [[encode(k, lenient), encode(v, lenient)] for k, v in value.items()]}
    if t is bytes:
        return {"$": "bytes", "v": value.hex()}
    if t is complex:
        return {"$": "complex", "v": [_float(value.real), _float(value.imag)]}
    if t is Ref:
        return {"$": "ref", "v": value.name}
    if t is type and getattr(builtins, value.__name__, None) is value:
        return {"$": "type", "v": value.__name__}  # MBPP passes `int` to filter a tuple by type
    if lenient:
        return _encode_other(value)
    raise TypeError(f"{t.__name__} is not plain data")


def _encode_other(value: Any) -> Any:
    """Program side: a range or an iterator tagged as such, else the plain value behind a subclass of a plain
    type or a numpy scalar; anything else (an object with its own __eq__, say) is refused."""
    if type(value) is range:
        return {"$": "range", "v": [value.start, value.stop, value.step]}
    if hasattr(value, "__next__"):
        return {"$": "iter", "v": [encode(v, True) for v in itertools.islice(value, MAX_ITEMS)]}
    for base in (bool, int, float, str, bytes, tuple, list, dict, frozenset, set, complex):
        if isinstance(value, base):
            return encode(base(value), True)
    if type(value).__module__ in _NUMPY and getattr(value, "ndim", None) == 0:
        return encode(value.item(), True)
    raise TypeError(f"returned a {type(value).__name__}, not plain data")


_PLAIN = {type(None), bool, int, float, str, list, tuple, set, frozenset, dict, bytes, complex}


def decode(data: Any, globals_: dict[str, Any] | None = None) -> Any:
    """Wire data back into plain values (and, program side, a Ref into the global it names)."""
    t = type(data)
    if data is None or t in (bool, int, float, str):
        return data
    if t is list:
        return [decode(v, globals_) for v in data]
    if t is not dict or set(data) != {"$", "v"}:
        raise ValueError("not wire data")
    return _DECODERS[data["$"]](data["v"], globals_)


def _hashables(v: Any, g: Any) -> list[Any]:
    return [decode(x, g) for x in v]


_DECODERS = {
    "tuple": lambda v, g: tuple(decode(x, g) for x in v),
    "set": lambda v, g: set(_hashables(v, g)),
    "frozenset": lambda v, g: frozenset(_hashables(v, g)),
    "dict": lambda v, g: {decode(k, g): decode(x, g) for k, x in v},
    "bytes": lambda v, g: bytes.fromhex(v),
    "int": lambda v, g: int(v, 16),
    "float": lambda v, g: float(v) if v in ("nan", "inf", "-inf") else _bad(),
    "complex": lambda v, g: complex(decode(v[0], g), decode(v[1], g)),
    "range": lambda v, g: range(*(int(x) for x in v)),
    "iter": lambda v, g: iter(decode(v, g)),
    "ref": lambda v, g: g[v] if g is not None else Ref(str(v)),  # program side: its global, or an instance
    "type": lambda v, g: _builtin_type(v),
}


def _builtin_type(name: str) -> type:
    value = getattr(builtins, name, None)
    if not isinstance(value, type):
        raise ValueError("not wire data")
    return value


def _bad() -> Any:
    raise ValueError("not wire data")


# --- serving (program side) ---------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, types.ModuleType):
        return f"module:{value.__name__}"
    if callable(value):
        return "function"
    return "value" if type(value) in _PLAIN else "object"


def _describe(names: list[str], program: dict[str, Any]) -> dict[str, Any]:
    kinds, values = {}, {}
    for name in names:
        if name in program:
            kinds[name] = _kind(program[name])
            if kinds[name] == "value":
                try:
                    values[name] = encode(program[name], True)
                except (TypeError, ValueError, RecursionError):
                    kinds[name] = "object"
    return {"kinds": kinds, "values": values}


def _call(request: dict[str, Any], program: dict[str, Any]) -> dict[str, Any]:
    try:
        args, kwargs = decode(request["args"], program), decode(request["kwargs"], program)
        function = program[request["name"]]
        result = function(*args, **kwargs)
        if isinstance(function, type) and type(result) not in _PLAIN:  # MBPP's `Pair(5, 24)`: kept here
            name = f"#{next(_instances)}"  # not an identifier: no global of the program's has it
            program[name] = result
            return {"ok": {"$": "ref", "v": name}}
        return {"ok": encode(result, True)}
    except BaseException as e:  # SystemExit and KeyboardInterrupt of the answer's code end only this call
        return {"raised": type(e).__name__, "message": str(e)[:300]}


def _send(reply: dict[str, Any]) -> None:
    data = json.dumps(reply, allow_nan=False).encode() + b"\n"
    while data:
        data = data[os.write(REPLIES, data) :]


def _load(path: str) -> dict[str, Any]:
    """Run the program as `__main__`; its globals. A failure prints the traceback and exits 1."""
    module = types.ModuleType("__main__")
    module.__file__ = "main.py"
    sys.modules["__main__"] = module
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        exec(compile(source, "main.py", "exec"), module.__dict__)
    except SystemExit:
        raise
    except BaseException:
        import traceback  # noqa: PLC0415 (only on failure: one import less per program)

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    return module.__dict__


def serve(path: str) -> None:
    requests = os.fdopen(REQUESTS, "rb", buffering=0)
    program = _load(path)
    _send({"ready": True})
    for line in iter(requests.readline, b""):
        request = json.loads(line)
        if request["op"] == "kinds":
            _send(_describe(request["names"], program))
        else:
            _send(_call(request, program))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # threads the answer left running do not keep the box alive


def run_script(path: str) -> None:
    """A stdin/stdout program: run as `__main__`, its exceptions and exit status left to the interpreter."""
    module = types.ModuleType("__main__")
    module.__file__ = path
    sys.modules["__main__"] = module
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        exec(compile(source, path, "exec"), module.__dict__)
    except SystemExit:
        raise
    except BaseException as e:  # the traceback from the program's own frames, as if it ran alone
        import traceback  # noqa: PLC0415

        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        raise SystemExit(1) from None


if __name__ == "__main__":
    # runner.py [--serve] MAIN [SITE_PACKAGES ...]: the interpreter runs with -S, which saves it the .pth files
    # of site-packages (30 ms of a 50 ms start in a venv); the directories themselves are added here
    serving = sys.argv[1] == "--serve"
    main, *site_packages = sys.argv[2:] if serving else sys.argv[1:]
    sys.path.extend(site_packages)
    sys.argv = [main]
    serve(main) if serving else run_script(main)
