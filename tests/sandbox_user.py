"""An unprivileged uid for sandbox tests: a system user, and the `pipeline` package where it can read it.

user = SandboxUser.create()            # root only: useradd once, a world-readable copy of `pipeline`
user.run(["-m", "pipeline.filter.verify", ...])  # /usr/bin/python3.11 as that user (the venv's python is under
                                       # /root, 0700: a non-root uid cannot even execute it)
user.sandbox(mode="userns").run(source)   # a Sandbox-like object whose runs happen as that user
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.sandbox.box import RunResult

REPO = Path(__file__).resolve().parent.parent
NAME = "distill-sandbox-test"
PYTHON = "/usr/bin/python3.11"
_DRIVER = """
import dataclasses, json, sys
from pipeline.sandbox.box import Limits, Sandbox
job = json.load(sys.stdin)
sandbox = Sandbox(limits=Limits(**job["limits"]), mode=job["mode"], python=sys.executable)
result = sandbox.run(job["source"], job["stdin"], job["timeout"])
print(json.dumps(dataclasses.asdict(result)))
"""


@dataclass(frozen=True)
class SandboxUser:
    uid: int
    gid: int
    home: Path
    """A world-readable folder holding the copy of `pipeline` (on PYTHONPATH)."""

    @classmethod
    def create(cls) -> SandboxUser:
        try:
            entry = pwd.getpwnam(NAME)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NAME], check=True
            )
            entry = pwd.getpwnam(NAME)
        home = Path(tempfile.mkdtemp(prefix="distill-user-", dir="/tmp"))
        home.chmod(0o755)
        shutil.copytree(REPO / "pipeline", home / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
        for path in home.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        return cls(entry.pw_uid, entry.pw_gid, home)

    def remove(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def run(
        self,
        args: list[str],
        stdin: str = "",
        cwd: Path | None = None,
        timeout: float = 120,
        prefix: tuple = (),
        python: str = PYTHON,
    ):
        """`PYTHON ARGS` as the user (`prefix`, e.g. ("unshare", "-r"), runs in front of it; `python`: another
        interpreter the user can run, such as a venv under /tmp)."""
        env = {**os.environ, "PYTHONPATH": str(self.home), "HOME": str(self.home)}
        return subprocess.run(
            [*prefix, python, *args], input=stdin, capture_output=True, text=True, env=env, cwd=cwd or self.home,
            user=self.uid, group=self.gid, extra_groups=[], timeout=timeout,
        )  # fmt: skip

    def sandbox(self, mode: str, limits, python: str = PYTHON) -> UserSandbox:
        return UserSandbox(self, mode, limits, python)


@dataclass(frozen=True)
class UserSandbox:
    """`Sandbox.run`, done by the unprivileged user's own grader process."""

    user: SandboxUser
    mode: str
    limits: object
    python: str = PYTHON

    def run(self, source: str, stdin: str = "", timeout: float = 10.0) -> RunResult:
        job = {
            "limits": self.limits.__dict__,
            "mode": self.mode,
            "source": source,
            "stdin": stdin,
            "timeout": timeout,
        }
        done = self.user.run(["-c", _DRIVER], stdin=json.dumps(job), timeout=timeout + 60, python=self.python)
        if done.returncode != 0:
            raise RuntimeError(f"the user's grader failed: {done.stderr[-2000:]}")
        return RunResult(**json.loads(done.stdout.splitlines()[-1]))
