"""A real single-node Slurm cluster for tests: Debian's munged, slurmctld and slurmd, all under one folder.

Used through the session fixture `slurm_cluster` (tests/conftest.py); any test may ask for it by name:

    def test_x(slurm_cluster: SlurmCluster):
        job = slurm_cluster.sbatch("--array=0-1", "recipes/slurm/generate-array.sbatch", recipe, "2", cwd=REPO)
        states = slurm_cluster.wait(job)          # {"12_0": "COMPLETED", "12_1": "COMPLETED"}

Interface (what a test may rely on):
- `sbatch(*args, cwd, env=None) -> str`: submits (`sbatch --parsable ARGS`) from `cwd` and returns the job id.
  Jobs run as root with the submitter's environment (`--export=ALL`, Slurm's default) plus `SLURM_CONF`.
- `run(*argv) -> CompletedProcess`: any Slurm client command (`scontrol requeue 12_1`, `scancel 12_1`, `sinfo`),
  pointed at this cluster; raises on a non-zero exit unless `check=False`.
- `states(job) -> dict[str, str]`: each array task's (or the job's) state, keyed `JOB_TASK` (or `JOB`), from
  `scontrol show job` (no accounting daemon; finished jobs stay visible for `MinJobAge`, 30 minutes).
- `wait(job, timeout=600, until=FINISHED) -> dict[str, str]`: polls `states` until every task is in `until`.
- `node` (the host's short name), `gpus` (fake GPUs: `--gres=gpu:N` with N <= gpus schedules),
  `cpus` / `memory_mb` (what the node offers), `folder` (config, spool, logs of the daemons), `env` (the
  environment for client commands).

The cluster is the host's: 1 node with its real cores, `RealMemory=20000`, `DefMemPerCPU=8000` (so two 1-CPU
jobs run side by side; without it each job takes the node's whole memory), and `gpus` empty files as GPUs
(`gres.conf`), so scripts that ask for `--gres=gpu:8` are scheduled. Its own munged (own key and socket), own
ports and pid files: it neither uses nor disturbs a Slurm or munge already running on the machine.
Packages (`slurmctld slurmd slurm-client munge`) are installed with apt when missing, which needs root; when that
is impossible the fixture skips with the reason. `stop()` ends the three daemons by their pid files.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PREFIX = "distill-slurm-"
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
FINISHED = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
)


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here (not root, no apt, install failed): the reason a test is skipped for."""


def install_packages() -> None:
    """apt-get install Debian's Slurm and munge when a binary is missing (root only)."""
    if all(shutil.which(b, path="/usr/sbin:/usr/bin") for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("Slurm is not installed and installing it needs root (apt-get)")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("Slurm is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
    ):
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise SlurmUnavailable(f"`{' '.join(argv)}` failed (apt unreachable?): {tail[0]}")


def stop_orphans() -> None:
    """Stop the clusters of test sessions that were killed before their teardown (their owner.pid is dead)."""
    for owner in Path(tempfile.gettempdir()).glob(f"{PREFIX}*/owner.pid"):
        try:
            alive = _alive(int(owner.read_text()))
        except (OSError, ValueError):
            alive = False
        if not alive:
            SlurmCluster(owner.parent).stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    CRED_EXPIRE = 15
    """Seconds a job credential lives (slurm.conf `AuthInfo=cred_expire`, 120 by default), which is also how long
    Slurm holds a requeued job before it may start: slurmd refuses a launch whose credential is no newer than the
    revocation of the job's last one ("Job credential revoked"), so a requeued job started at once can fail
    before its script runs. Short here so a test waits it out rather than the default two minutes; a launch's
    credential is checked within a second of being made, so 15 s still leaves it a wide margin."""

    def __init__(self, folder: Path, gpus: int = 8) -> None:
        self.folder, self.gpus = folder, gpus
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.memory_mb = 20000
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
        for var in [
            v for v in self.env if v.startswith(("SLURM_", "SBATCH_", "SRUN_")) and v != "SLURM_CONF"
        ]:
            del self.env[var]  # a test run inside a Slurm job must not leak that job's settings into ours

    @classmethod
    def start(cls, folder: Path | None = None, gpus: int = 8) -> SlurmCluster:
        """Install when needed, write the configuration, start munged, slurmctld, slurmd; wait for an idle node."""
        if os.geteuid() != 0:
            raise SlurmUnavailable(
                "the test cluster's daemons run as root (SlurmUser=root); run the tests as root"
            )
        install_packages()
        stop_orphans()
        # munged runs as the munge user, which must reach its folder: not under pytest's 0700 tmp root
        folder = folder or Path(tempfile.mkdtemp(prefix=PREFIX))
        folder.chmod(0o755)
        (folder / "owner.pid").write_text(str(os.getpid()))
        cluster = cls(folder, gpus)
        try:
            cluster._configure()
            cluster._start_daemons()
            cluster._wait_idle()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _configure(self) -> None:
        f = self.folder
        for sub in ("ctld", "d", "log", "gpu"):
            (f / sub).mkdir(exist_ok=True)
        for i in range(self.gpus):
            (f / "gpu" / f"nvidia{i}").touch()
        munge = f / "munge"
        munge.mkdir(exist_ok=True)
        munge.chmod(0o755)  # munged: clients need execute permission on the socket's folder
        (munge / "munge.key").write_bytes(os.urandom(1024))
        (munge / "munge.key").chmod(0o400)
        ids = pwd.getpwnam("munge")
        for p in (munge, munge / "munge.key"):
            os.chown(p, ids.pw_uid, ids.pw_gid)
        (f / "slurm.conf").write_text(self._slurm_conf())
        (f / "gres.conf").write_text(
            f"NodeName={self.node} Name=gpu File={f}/gpu/nvidia[0-{self.gpus - 1}]\n"
        )

    def _slurm_conf(self) -> str:
        f = self.folder
        return "\n".join(
            [
                "ClusterName=distilltest",
                f"SlurmctldHost={self.node}",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "SlurmUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={f}/munge/munge.socket,cred_expire={self.CRED_EXPIRE}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "DefMemPerCPU=8000",
                "MailProg=/bin/true",
                "MinJobAge=1800",
                "ReturnToService=2",
                "GresTypes=gpu",
                f"StateSaveLocation={f}/ctld",
                f"SlurmdSpoolDir={f}/d",
                f"SlurmctldPidFile={f}/slurmctld.pid",
                f"SlurmdPidFile={f}/slurmd.pid",
                f"SlurmctldLogFile={f}/log/slurmctld.log",
                f"SlurmdLogFile={f}/log/slurmd.log",
                f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} "
                f"Gres=gpu:{self.gpus} State=UNKNOWN",
                f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def _start_daemons(self) -> None:
        m = self.folder / "munge"
        subprocess.run(
            [
                "runuser", "-u", "munge", "--", "/usr/sbin/munged",
                f"--socket={m}/munge.socket", f"--key-file={m}/munge.key", f"--pid-file={m}/munged.pid",
                f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed",
            ],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        conf = str(self.folder / "slurm.conf")
        for daemon in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd"):
            r = subprocess.run([daemon, "-f", conf], env=self.env, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"{daemon} did not start: {r.stderr.strip()} (logs: {self.folder}/log)")

    def _wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            if r.returncode == 0 and r.stdout.strip() == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the test node never became idle (logs: {self.folder}/log)")

    def run(self, *argv: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, cwd=cwd, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv)}` exited {r.returncode}: {r.stderr.strip()}")
        return r

    def sbatch(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
        r = subprocess.run(
            ["sbatch", "--parsable", *args], env={**self.env, **(env or {})}, cwd=cwd,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
        return r.stdout.strip().split(";")[0]

    def states(self, job: str) -> dict[str, str]:
        """State of each task of `job` (`JOB_TASK`, or `JOB` for a plain job); a pending range counts as one."""
        r = self.run("scontrol", "show", "job", "-o", job)
        states = {}
        for line in r.stdout.splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            task = fields.get("ArrayTaskId")
            key = f"{fields.get('ArrayJobId', fields['JobId'])}_{task}" if task else fields["JobId"]
            states[key] = fields["JobState"]
        return states

    def wait(self, job: str, timeout: float = 600, until: frozenset[str] = FINISHED) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            states = self.states(job)
            if states and all(s in until for s in states.values()):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job} still {states} after {timeout:.0f} s")
            time.sleep(0.5)

    def daemon_logs(self, job: str, tail: int = 2000) -> str:
        """slurmctld's and slurmd's log lines from `job`'s submission on (of their last `tail` lines): why a job
        failed when its own log says nothing (a launch that failed before its script ran)."""
        logs = {}
        for name in ("slurmctld.log", "slurmd.log"):
            try:
                logs[name] = (self.folder / "log" / name).read_text(errors="replace").splitlines()[-tail:]
            except OSError:
                logs[name] = []
        # lines start with [2026-12-07T21:41:54.582]: ISO stamps, in order as strings
        since = next((line[:25] for line in logs["slurmctld.log"] if f"JobId={job} " in line), "")
        return "\n".join(
            f"{name}: {line}" for name, lines in logs.items() for line in lines if line[:25] >= since
        )

    def stop(self) -> None:
        """End slurmd, slurmctld and munged by their pid files, then remove the folder."""
        for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            path = self.folder / pidfile
            try:
                pid = int(path.read_text().strip())
                os.kill(pid, 15)
            except (OSError, ValueError):
                continue
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # a zombie of ours is gone for every purpose here
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))
