"""The code sandbox: runs untrusted Python (a model's answer) in a box it cannot leave, and lets a judge outside
the box call the answer's functions, so that a verdict is decided where the candidate cannot reach. Used by the
filter's code step, `distill verify --kind code` and eval. Its threat model is README's "The code sandbox".

Grouped by what each part is for:
- the box: `box.py` (`Sandbox`: run a program or a conversation, with limits), `modes.py` (namespaces, userns,
  landlock: what each needs, checked once per process), `contents.py` (what a box holds and sees);
- isolation, in the box's own processes (standard library only, run under `python -I -S`): `jail.py` (the
  supervisor that builds the box and runs the program), `seccomp.py`, `landlock.py`;
- verdicts: `runner.py` (the harness inside the box, which only loads the answer and calls it), `channel.py`
  (the grader's end of its pipes), `judge.py` (the tests, run in the grader's process).

    from pipeline.sandbox import Sandbox, Limits
    result = Sandbox(limits=Limits(memory_bytes=512 << 20)).run("print(input()[::-1])", stdin="abc", timeout=5)
"""

from pipeline.sandbox.box import (
    Job,
    Limits,
    RunResult,
    Sandbox,
    SandboxConfig,
    SandboxError,
    SandboxUnavailable,
    cores,
    require_mode,
    resolve_mode,
)

__all__ = [
    "Job",
    "Limits",
    "RunResult",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "SandboxUnavailable",
    "cores",
    "require_mode",
    "resolve_mode",
]
