"""recipes/slurm/generate-array.sbatch, submitted as users do, under a real single-node Slurm (`slurm_cluster`).

The array's shards together equal an unsharded run bit for bit; a cancelled task resubmitted alone
(`sbatch --array=1 ... 2`) or requeued (`scontrol requeue`) resumes with no duplicate, and the requeue appends to
the first attempt's log; a submission without the shard count, or with another count than the shards already
written, fails before writing anything. The jobs run the transformers engine with one sequence a batch, so each
sample's seed alone fixes its text whatever the shard layout, and no vLLM start-up is paid per task.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.generate.plan import in_shard
from pipeline.records.logprobs import Sidecar
from tests.conftest import REPO
from tests.slurm_cluster import SlurmCluster

pytestmark = pytest.mark.slow

SCRIPT = "recipes/slurm/generate-array.sbatch"
SHARDS = 2
N = 2
PROBLEMS = [(a, b) for a in range(2, 50, 4) for b in (4, 17)][:14]


def recipe_text(teacher_dir: Path, problems: Path, output: Path) -> str:
    return f"""# the tiny teacher over {len(PROBLEMS)} additions, for the Slurm array tests
stage: generate
model: {teacher_dir}
backend: transformers
problems:
  path: {problems}
output: {output}
sampling:
  n: {N}
  max_tokens: 48
logprobs: 3
batch_size: 1
flush_every: 2
engine:
  dtype: float32
"""


@pytest.fixture(scope="module")
def recipe(teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("slurm-array")
    problems = folder / "problems.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": f"add-{a}-{b}", "problem": f"What is {a}+{b}?", "answer": str(a + b)}) + "\n"
            for a, b in PROBLEMS
        )
    )
    path = folder / "recipe.yaml"
    path.write_text(recipe_text(teacher_dir, problems, folder / "unsharded"))
    return path


@pytest.fixture(scope="module")
def unsharded(recipe: Path) -> dict[str, tuple[dict, tuple]]:
    """The reference: the same recipe run directly, in one piece (in this process: the jobs are the runs of
    the real command under test)."""
    from pipeline.cli import load_stage_config
    from pipeline.generate.stage import run

    assert run(load_stage_config("generate", str(recipe), [])) == 0
    return samples(recipe.parent / "unsharded")


def samples(folder: Path) -> dict[str, tuple[dict, tuple]]:
    """Every sample row under `folder` with its sidecar arrays, by id; a duplicate id fails the test."""
    sidecar, out = Sidecar(folder), {}
    for shard in sorted(folder.rglob("samples-*.jsonl")):
        for line in shard.read_text().splitlines():
            row = json.loads(line)
            assert row["id"] not in out, f"duplicate {row['id']} in {shard}"
            topk = sidecar[row["id"]]
            arrays = (topk.token_ids, topk.token_logprobs, topk.topk_ids, topk.topk_logprobs)
            out[row["id"]] = (row, tuple((a.dtype.str, a.shape, np.asarray(a).tobytes()) for a in arrays))
    return out


@pytest.fixture
def job_name() -> Iterator[str]:
    """A name of its own, so the job's logs (in the repository's logs/ folder, as the script says) are removed."""
    name = f"test-array-{uuid.uuid4().hex[:8]}"
    yield name
    for log in (REPO / "logs").glob(f"{name}-*"):
        log.unlink()


def submit(cluster: SlurmCluster, name: str, array: str, *args: str) -> str:
    # the script's whole-node request (64 CPUs) is trimmed to this machine's; its gres=gpu:8 stays, so tasks
    # take the node's 8 fake GPUs one after another, as on a real node
    return cluster.sbatch(
        f"--array={array}", f"--job-name={name}", "--cpus-per-task=1", SCRIPT, *args, cwd=REPO
    )


def cancelled_mid_shard(
    cluster: SlurmCluster, name: str, recipe: Path, out: Path, task: int
) -> tuple[str, Path]:
    """Submit shard `task` alone (`--array=TASK`, the run's count given), scancel it as soon as its shard folder
    holds a committed sample file; the job id and the shard folder."""
    job = submit(cluster, name, str(task), str(recipe), str(SHARDS), f"output={out}")
    shard = out / f"shard-{task:05d}-of-{SHARDS:05d}"
    deadline = time.monotonic() + 300
    while not any(shard.glob("samples-*.jsonl")):
        assert time.monotonic() < deadline, f"{shard} never got a committed file"
        time.sleep(0.05)
    cluster.run("scancel", f"{job}_{task}")
    assert cluster.wait(job) == {f"{job}_{task}": "CANCELLED"}
    # CANCELLED is set when the kill is sent; the task's processes may still be exiting (squeue lists it, CG): wait
    # until it is gone before a requeue or a resubmission. (Not what made a released requeue fail at once: that is
    # slurmd refusing a job id whose credential the cancel revoked; see the requeue test.)
    deadline = time.monotonic() + 120
    while (r := cluster.run("squeue", "-h", "-j", job, check=False)).returncode == 0 and r.stdout.strip():
        assert time.monotonic() < deadline, f"job {job} still completing: {r.stdout.strip()}"
        time.sleep(0.2)
    return job, shard


def of_shard(rows: dict[str, tuple[dict, tuple]], task: int) -> dict[str, tuple[dict, tuple]]:
    return {i: v for i, v in rows.items() if in_shard(v[0]["problem_id"], (task, SHARDS))}


def test_two_task_array_equals_an_unsharded_run_bit_for_bit(
    slurm_cluster, recipe, unsharded, job_name, tmp_path
):
    out = tmp_path / "array"
    job = submit(slurm_cluster, job_name, "0-1", str(recipe), str(SHARDS), f"output={out}")
    assert slurm_cluster.wait(job) == {f"{job}_0": "COMPLETED", f"{job}_1": "COMPLETED"}
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000-of-00002", "shard-00001-of-00002"]
    assert samples(out) == unsharded
    assert len(unsharded) == len(PROBLEMS) * N


def test_a_cancelled_task_resubmitted_alone_resumes_without_duplicates(
    slurm_cluster, recipe, unsharded, job_name, tmp_path
):
    out = tmp_path / "resubmit"
    _, shard = cancelled_mid_shard(slurm_cluster, job_name, recipe, out, 1)
    assert 0 < len(samples(shard)) < len(of_shard(unsharded, 1)), "the task was cancelled mid-shard"

    again = submit(slurm_cluster, job_name, "1", str(recipe), str(SHARDS), f"output={out}")
    log = REPO / "logs" / f"{job_name}-{again}_1.out"
    assert slurm_cluster.wait(again) == {f"{again}_1": "COMPLETED"}, log.read_text()
    assert sorted(p.name for p in out.iterdir()) == [shard.name]  # no shard-00000-of-00001 beside it
    assert samples(out) == of_shard(unsharded, 1)


def test_scontrol_requeue_resumes_and_appends_to_the_first_log(
    slurm_cluster, recipe, unsharded, job_name, tmp_path
):
    out = tmp_path / "requeue"
    job, _ = cancelled_mid_shard(slurm_cluster, job_name, recipe, out, 0)
    log = REPO / "logs" / f"{job_name}-{job}_0.out"
    first = log.read_text()
    assert "attempt 1" in first

    slurm_cluster.run("scontrol", "requeue", f"{job}_0")
    # Slurm holds a requeued job until the cancelled attempt's credential has expired (cred_expire, the test
    # cluster's 15 s): started sooner, slurmd may take the new credential for the revoked one and fail the attempt
    # before its script runs. Wait that out, then release it rather than wait for the scheduler's next pass.
    time.sleep(slurm_cluster.CRED_EXPIRE + 1)
    slurm_cluster.run("scontrol", "update", f"JobId={job}_0", "StartTime=now")
    state = slurm_cluster.wait(job, until=frozenset({"COMPLETED", "FAILED"}))
    text = log.read_text()
    assert state == {f"{job}_0": "COMPLETED"}, f"{text}\n{slurm_cluster.daemon_logs(job)}"
    assert text.startswith(first) and re.search(r"attempt [2-9]", text[len(first) :]), text
    assert samples(out) == of_shard(unsharded, 0)


@pytest.mark.parametrize(
    ("array", "args", "message"),
    [
        ("0", ["RECIPE"], "expected a recipe and the run's shard count"),
        ("0", ["RECIPE", "output=OUT"], "argument N: 'output=OUT' is not a positive shard count"),
        ("3", ["RECIPE", "2", "output=OUT"], "array index 3 is not a shard of 2"),
        (
            "0",
            ["RECIPE", "4", "output=OUT"],
            "already holds shard-00000-of-00002: resubmit with that run's shard count, not 4",
        ),
    ],
    ids=["no-count", "overrides-but-no-count", "index-past-count", "count-differs-from-the-output"],
)
def test_a_submission_without_the_runs_shard_count_fails_and_writes_nothing(
    slurm_cluster, recipe, job_name, tmp_path, array, args, message
):
    out = tmp_path / "bad"
    (out / "shard-00000-of-00002").mkdir(parents=True)  # a run of 2 shards already started here
    fill = {"RECIPE": str(recipe), "output=OUT": f"output={out}"}
    job = submit(slurm_cluster, job_name, array, *(fill.get(a, a) for a in args))
    (state,) = slurm_cluster.wait(job).values()
    assert state == "FAILED"
    log = (REPO / "logs" / f"{job_name}-{job}_{array}.out").read_text()
    assert f"error: {SCRIPT}: " in log and message.replace("OUT", str(out)) in log, log
    assert [p.name for p in out.rglob("*")] == ["shard-00000-of-00002"]
    assert not (recipe.parent / "unsharded" / "shard-00000-of-00001").exists()
