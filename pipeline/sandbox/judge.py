"""The judge, on the grader's side of the sandbox: run a problem's tests against an answer it can only call.

    outcome = judge(tests, channel)     # channel: the running harness (runner.py) with the answer loaded
    outcome.passed, outcome.detail      # False, "AssertionError"

The tests (HumanEval's `check(candidate)`, MBPP's asserts) run here, in the grader's process, where the
answer's code never runs: each function of the answer they call is a `Remote` that sends the arguments over
the channel and gets back plain data (`runner.decode` builds only int, str, list, ... never an object with
methods of the answer's), or an exception of a builtin type carrying only a message. So asserts, expected
values and the decision "passed" exist only here, and no program text can change them.

Names the tests use, for the asserts kind: a function the answer defines becomes a Remote; a plain value a
copy; another object (a tree MBPP's setup code built with the answer's class) a reference the answer resolves
when passed back; a module the answer imported the same standard module here. An answer that defines a
builtin's name (`int`, `len`) does not replace it in the tests, unless the tests call nothing else of the
answer's (MBPP's `sum(10, 15)` problem). HumanEval's prompt (helpers such as `poly`) runs here too, so an
answer that redefines a helper the tests use changes nothing.
"""

from __future__ import annotations

import builtins
import importlib
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Any

from pipeline.sandbox.channel import Channel, ChannelClosed
from pipeline.sandbox.runner import Ref, decode, encode

_NEVER_IMPORTED = {"antigravity", "this", "idlelib", "turtle", "turtledemo", "tkinter"}
"""Standard modules whose import does something (opens a browser, prints, needs a display)."""
_SAFE_EXCEPTIONS = {
    name: e
    for name, e in vars(builtins).items()
    if isinstance(e, type) and issubclass(e, Exception) and e not in (StopIteration, StopAsyncIteration)
}


class CandidateError(Exception):
    """The answer raised an exception whose type is not a plain builtin one (its name is in the message)."""


@dataclass(frozen=True)
class Outcome:
    passed: bool
    detail: str = ""


class Remote:
    """A function of the answer: calling it sends plain arguments and returns the plain data it answers."""

    def __init__(self, channel: Channel, name: str) -> None:
        self._channel, self.__name__ = channel, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = {"op": "call", "name": self.__name__, "args": encode(list(args)), "kwargs": encode(kwargs)}
        reply = _ask(self._channel, request)
        if "ok" in reply:
            return decode(reply["ok"])
        raise _exception(str(reply.get("raised")), str(reply.get("message")))

    def __repr__(self) -> str:
        return f"<the answer's {self.__name__}>"


def _ask(channel: Channel, request: dict[str, Any]) -> dict[str, Any]:
    reply = channel.ask(request)
    if not isinstance(reply, dict):
        raise CandidateError("the answer's harness sent something that is not a reply")
    return reply


def _exception(kind: str, message: str) -> Exception:
    """The answer's exception as one of ours: a builtin type by name (never StopIteration, which through map()
    or a generator would end the tests' loop early), else CandidateError; only the message crosses."""
    try:
        return _SAFE_EXCEPTIONS[kind](message)
    except (KeyError, TypeError):  # not a safe builtin, or one whose constructor wants more (UnicodeError)
        return CandidateError(f"{kind}: {message}")


def _names(code: types.CodeType) -> set[str]:
    """Every name the code (and the functions and comprehensions in it) may look up."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _module(kind: str, name: str) -> types.ModuleType | None:
    """The standard module the tests mean by `name`, when the answer bound a module to that name."""
    if name in sys.stdlib_module_names and not name.startswith("_") and name not in _NEVER_IMPORTED:
        return importlib.import_module(name)
    return None


def _asserts_namespace(code: types.CodeType, channel: Channel) -> dict[str, Any]:
    reply = _ask(channel, {"op": "kinds", "names": sorted(_names(code))})
    kinds, values = dict(reply.get("kinds", {})), dict(reply.get("values", {}))
    functions = {n for n, k in kinds.items() if k == "function"}
    tested = {n for n in functions if not hasattr(builtins, n)} or functions
    namespace: dict[str, Any] = {"__name__": "__tests__"}
    for name, kind in kinds.items():
        if hasattr(builtins, name) and name not in tested:
            continue
        if name in tested:
            namespace[name] = Remote(channel, name)
        elif kind == "value" and name in values:
            namespace[name] = decode(values[name])
        elif kind == "object":
            namespace[name] = Ref(name)
        elif str(kind).startswith("module:") and (module := _module(kind, name)):
            namespace[name] = module
    return namespace


def _run_tests(tests: dict[str, Any], channel: Channel) -> None:
    if tests["kind"] == "humaneval":
        namespace: dict[str, Any] = {"__name__": "__tests__"}
        exec(compile(tests.get("prelude", ""), "prompt", "exec"), namespace)
        exec(compile(tests["test"], "test", "exec"), namespace)
        candidate = namespace[tests["entry_point"]] = Remote(
            channel, tests["entry_point"]
        )  # as in one program
        namespace["check"](candidate)
    else:
        code = compile("\n".join(tests["asserts"]), "tests", "exec")
        exec(code, _asserts_namespace(code, channel))


def judge(tests: dict[str, Any], channel: Channel) -> Outcome:
    """Wait for the answer to load, run the tests here, and say whether every one passed.

    ChannelClosed (the program ended or timed out) is the caller's to interpret, with the program's status.
    """
    ready = channel.receive()
    if ready != {"ready": True}:
        return Outcome(False, "the harness did not start")
    try:
        _run_tests(tests, channel)
    except Exception as e:  # an assertion, an error of the answer's, or data the tests cannot use
        return Outcome(False, traceback.format_exception_only(type(e), e)[-1].strip()[:300])
    if channel.closed:  # tests that swallowed the end of the program (a bare `except:`) prove nothing
        raise ChannelClosed("the program ended during the tests")
    return Outcome(True)
