"""Shared fixtures: offline environment, tiny local models, one vLLM engine per test session."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Offline before anything imports huggingface_hub: an accidental download fails loudly instead of hanging.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # the VM shows ~9 GiB on its NUMA node
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if (Path.home() / ".ray" / "auth_token").exists():  # Ray 2.60 then needs token auth in every process
    os.environ.setdefault("RAY_AUTH_MODE", "token")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# the project's public test data lives beside the clone (../shared/data); DISTILL_SHARED_DATA points elsewhere, for
# a clone made where ../shared is not (a CI container's /tmp)
SHARED_DATA = Path(os.environ.get("DISTILL_SHARED_DATA") or REPO.parent / "shared" / "data")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_gpu = subprocess.run(["sh", "-c", "nvidia-smi -L 2>/dev/null | grep -q ^GPU"]).returncode == 0
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Qwen2 model (hidden 128, head_dim 64) with the project's tokenizer and chat template."""
    from pipeline.tiny_model import TinyModelSpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", TinyModelSpec(seed=0))


@pytest.fixture(scope="session")
def teacher_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after memorising a few worked additions (~4 s): it emits canonical, mostly right traces."""
    from tests.helpers import train_memoriser

    return train_memoriser(tiny_model_dir, tmp_path_factory.mktemp("teacher") / "model")


def teacher_recipe(teacher_dir: Path, tmp_path: Path, **overrides) -> GenerateConfig:  # noqa: F821
    """A generate config for the tiny teacher over the helper problems; keyword overrides are dotted keys."""
    from pipeline.config import load_config
    from pipeline.generate.config import GenerateConfig
    from tests.helpers import write_problems

    tmp_path.mkdir(parents=True, exist_ok=True)
    problems = write_problems(tmp_path / "problems.jsonl")
    base = {
        "model": str(teacher_dir),
        "problems.path": str(problems),
        "output": str(tmp_path / "out"),
        "sampling.max_tokens": 48,
        "engine": "{max_model_len: 512, enforce_eager: true, dtype: float32}",
    }
    base.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(GenerateConfig, None, [f"{k}={v}" for k, v in base.items()])


@pytest.fixture(scope="session")
def teacher_engine(teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real vllm-cpu engine over the tiny teacher, shared by the tests that need one (start-up ~20 s)."""
    from pipeline.generate.engine_vllm import VLLMEngine
    from pipeline.preflight import load_tokenizer

    cfg = teacher_recipe(teacher_dir, tmp_path_factory.mktemp("engine"))
    engine = VLLMEngine(cfg, load_tokenizer(cfg))
    yield engine
    engine.close()


def run_distill(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run the real `distill` command in a subprocess (`python -m pipeline.cli`, the console script's target,
    so the checkout under test is the one imported)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def distill_main(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`run_distill` in this process: `pipeline.cli.main` (what the console script calls and exits with) with
    stdout, stderr and the stage's log lines captured, so a test of a refusal or of a stage that starts no engine
    does not pay a new interpreter's imports (~10 s for torch and vLLM). A bug's exception is printed as a
    process would print it (exit 1). Tests that kill or time the process itself keep `run_distill`."""
    import io
    import logging
    import traceback
    from contextlib import redirect_stderr, redirect_stdout

    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root, saved_env, saved_cwd = logging.getLogger(), dict(os.environ), os.getcwd()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    os.environ.update(env or {})
    os.chdir(cwd or REPO)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess(["distill", *args], code, out.getvalue(), err.getvalue())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_vllm(model: Path, log_path: Path, *extra: str) -> Iterator[str]:
    """A real vLLM OpenAI-compatible server of `model` on loopback, as `teacher`, started the way users start
    one (`distill serve`); yields its base URL (`http://127.0.0.1:PORT/v1`) once it answers, stops it after."""
    with vllm_server(model, log_path, *extra) as (url, _):
        yield url


@contextmanager
def vllm_server(
    model: Path, log_path: Path, *extra: str, drop_env: tuple[str, ...] = ()
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`serve_vllm`, yielding the server process too (its own process group), for tests that kill it;
    `drop_env`: variables the server does not inherit (to see that `distill serve` sets them itself)."""
    import urllib.request

    port = free_port()
    args = ["--port", str(port), "--host", "127.0.0.1", "--max-model-len", "512", "--enforce-eager"]
    args += ["--served-model-name", "teacher", "--seed", "0", "--dtype", "float32", *extra]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", str(model), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k not in drop_env},
        )
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1", proc
    finally:
        with contextlib.suppress(ProcessLookupError):  # a test may have killed it already
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture(scope="session")
def teacher_server(teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `distill serve` of the tiny teacher on loopback for the session (start-up ~20 s), shared by the tests
    of served teachers (generate's openai backend, opd, serve itself): top-20 logprobs for opd's scoring, R1's
    reasoning parser for generate's chat requests. It does not inherit VLLM_CPU_KVCACHE_SPACE: `distill serve`
    sets what a CPU machine needs. Tests that count requests do so through their own proxy, not its log."""
    extra = ("--max-logprobs", "20", "--reasoning-parser", "deepseek_r1")
    log = tmp_path_factory.mktemp("teacher-server") / "server.log"
    with vllm_server(teacher_dir, log, *extra, drop_env=("VLLM_CPU_KVCACHE_SPACE",)) as (url, _):
        yield url


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:  # noqa: F821
    """A real single-node Slurm with 8 fake GPUs, shared by the session (interface: tests/slurm_cluster.py);
    skipped, with the reason, where it cannot run (not root, or Slurm missing and apt unreachable)."""
    from tests.slurm_cluster import SlurmCluster, SlurmUnavailable

    try:
        cluster = SlurmCluster.start()
    except SlurmUnavailable as e:
        pytest.skip(f"no Slurm test cluster: {e}")
    yield cluster
    cluster.stop()
