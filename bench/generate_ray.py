"""generate on Ray with one engine replica against the direct `distill generate`, same run, same machine.

    .venv/bin/python bench/generate_ray.py [--problems 128 --n 4 --max-tokens 256 --rounds 2 --logprobs 0 5]

Starts one Ray cluster on this machine first (a head node, as a user's cluster exists before the run),
then times the same recipe end to end as two `distill generate` commands, alternating (direct, ray, direct,
ray ...) so machine noise hits both: the direct one starts its own vLLM engine in-process; the Ray one
(`launch: ray`, `ray.replicas=1`) connects, starts one engine replica through Ray Data LLM, and streams the
completions back to the driver, which commits them. Both include engine start-up. Figure: completion tokens/s
of the whole command (the Ray run's over the direct run's, per round, and the range). Target (issue #21):
>= 0.85. Also printed: how many samples are identical both ways (vLLM batches them differently, and over
hundreds of tokens a float rounding can flip a sampled token). Each `--logprobs` k is its own recipe: 0, generate's
default (traces for SFT), and 5 (traces with the top-5 sidecar for KD), measured in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--unit", type=int, default=32, help="ray.unit: samples per unit of work")
    ap.add_argument("--logprobs", type=int, nargs="+", default=[0, 5], help="top-k logprobs, one recipe each")
    return ap.parse_args()


def write_recipe(args: argparse.Namespace, tmp: Path, model: Path, logprobs: int) -> Path:
    problems = tmp / "problems.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "problem": f"Compute {i} * {i + 3} - {i % 7}."}) + "\n"
            for i in range(args.problems)
        )
    )
    recipe = tmp / f"generate-{logprobs}.yaml"
    recipe.write_text(
        f"# bench\nstage: generate\nmodel: {model}\nproblems:\n  path: {problems}\nlogprobs: {logprobs}\n"
        f"sampling:\n  n: {args.n}\n  max_tokens: {args.max_tokens}\n  temperature: 1.0\n"
        "engine:\n  max_model_len: 1024\n"
    )
    return recipe


def timed(recipe: Path, out: Path, env: dict[str, str], *extra: str) -> float:
    """Completion tokens/s of one whole `distill generate` command (start-up included)."""
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "pipeline.cli", "generate", "--config", str(recipe), f"output={out}", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest["counts"]["completion_tokens"] / seconds


def samples(out: Path) -> dict[str, str]:
    return {
        (row := json.loads(line))["id"]: row["completion"]
        for shard in sorted(out.glob("samples-*.jsonl"))
        for line in shard.read_text().splitlines()
    }


def main() -> None:
    args = parse_args()
    from pipeline.tiny_model import TinyModelSpec, build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-ray-"))
    model = build_tiny_model(tmp / "model", TinyModelSpec(layers=4))
    recipes = {k: write_recipe(args, tmp, model, k) for k in args.logprobs}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"VLLM_CPU_KVCACHE_SPACE": "2"}
    if (Path.home() / ".ray" / "auth_token").exists():  # Ray 2.60 then needs token auth in every process
        os.environ["RAY_AUTH_MODE"] = env["RAY_AUTH_MODE"] = "token"
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, connect=False, head_node_args={"num_cpus": 8}
    )  # its own processes
    direct, via_ray, same = ({k: [] for k in recipes} for _ in range(3))
    try:
        ray_env = {**env, "RAY_ADDRESS": cluster.address}
        on_ray = ["launch=ray", "ray.replicas=1", f"ray.unit={args.unit}"]
        for i in range(args.rounds):
            for k, recipe in recipes.items():
                out = tmp / f"k{k}"
                direct[k].append(timed(recipe, out / f"direct-{i}", env))
                via_ray[k].append(timed(recipe, out / f"ray-{i}", ray_env, *on_ray))
                a, b = samples(out / f"direct-{i}"), samples(out / f"ray-{i}")
                same[k].append(sum(a[key] == b.get(key) for key in a))
    finally:
        cluster.shutdown()
    print(
        f"\ngenerate on Ray benchmark: {args.problems} problems x n={args.n}, max_tokens={args.max_tokens}, "
        f"tiny Qwen2 (4 layers), ray {__import__('ray').__version__}, one replica, unit {args.unit}, "
        f"{args.rounds} alternating rounds (whole commands, engine start-up included)"
    )
    for k in recipes:
        print(f" logprobs {k}" + (" (generate's default)" if k == 0 else f" (top-{k} sidecar)"))
        for i, (d, r) in enumerate(zip(direct[k], via_ray[k], strict=True)):
            print(
                f"  round {i}: direct {d:,.0f} tok/s, on Ray {r:,.0f} tok/s, ratio {r / d:.3f}; "
                f"identical samples {same[k][i]}/{args.problems * args.n}"
            )
        ratios = [r / d for d, r in zip(direct[k], via_ray[k], strict=True)]
        print(f"  ratio range {min(ratios):.3f}-{max(ratios):.3f} (target >= 0.85)")


if __name__ == "__main__":
    main()
