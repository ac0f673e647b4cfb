"""Generate-stage throughput against raw `LLM.generate`, same engine, model, prompts and sampling.

    .venv/bin/python bench/generate.py [--problems 64 --n 4 --max-tokens 256 --rounds 2]

Both sides share one vLLM engine in this process and alternate (raw, stage, raw, stage ...), so machine noise
hits both; the figure is completion tokens/s, the stage's including prompt rendering, per-sample seeds,
Sample records, sidecar writing and fsyncs. Prints the ratio stage/raw without and with top-5 logprobs.
Targets (issue #3): >= 0.95 without logprobs, >= 0.85 with top-5.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    return ap.parse_args()


def write_problems(path: Path, n: int) -> Path:
    """`n` small arithmetic problems as a problems JSONL file."""
    path.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "problem": f"Compute {i} * {i + 3} - {i % 7}."}) + "\n"
            for i in range(n)
        )
    )
    return path


def stage_config(args: argparse.Namespace, model: Path, problems: Path, output: Path, k: int) -> Any:
    """The generate recipe of the benchmark, writing to `output`, with top-`k` logprobs (0: none)."""
    from pipeline.config import load_config
    from pipeline.generate.config import GenerateConfig

    return load_config(
        GenerateConfig,
        None,
        [
            f"model={model}",
            f"problems.path={problems}",
            f"output={output}",
            f"sampling.n={args.n}",
            f"sampling.max_tokens={args.max_tokens}",
            f"logprobs={k}",
            "engine={max_model_len: 1024}",
        ],
    )


def raw_prompts(base: Any, tokenizer: Any, engine: Any, n: int) -> list[dict[str, Any]]:
    """The stage's own rendered prompts, one per problem, as `LLM.generate` inputs."""
    from pipeline.generate.plan import iter_work, render_requests

    firsts = (w for w in iter_work(base, None) if w.sample_index == 0)
    return [
        {"prompt_token_ids": r.prompt_ids}
        for r in render_requests(base, firsts, tokenizer, engine.max_model_len)
    ]


def raw_tps(
    args: argparse.Namespace, engine: Any, prompts: list[dict[str, Any]], sampling: Any, k: int
) -> float:
    """Completion tokens/s of one raw `LLM.generate` call over the prompts, with top-`k` logprobs (0: none)."""
    from vllm import SamplingParams

    params = SamplingParams(
        n=args.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=args.max_tokens,
        logprobs=k or None,
        skip_special_tokens=False,
    )
    t = time.perf_counter()
    outs = engine.llm.generate(prompts, params, use_tqdm=False)
    return sum(len(o.token_ids) for r in outs for o in r.outputs) / (time.perf_counter() - t)


def stage_tps(cfg: Any, engine: Any) -> float:
    """Completion tokens/s of one generate-stage run of `cfg` on the shared engine, from its manifest."""
    from pipeline.generate.stage import run

    t = time.perf_counter()
    run(cfg, engine=engine)
    seconds = time.perf_counter() - t
    manifest = json.loads((Path(cfg.output) / "manifest.json").read_text())
    return manifest["counts"]["completion_tokens"] / seconds


def measure(
    args: argparse.Namespace, engine: Any, prompts: list[dict[str, Any]], base: Any, cfg: Any
) -> dict[int, tuple[float, float]]:
    """For k = 0 and 5 logprobs: mean (raw, stage) tok/s over `--rounds` alternating rounds."""
    results = {}
    for k in (0, 5):
        raws, stages = [], []
        for i in range(args.rounds):
            raws.append(raw_tps(args, engine, prompts, base.sampling, k))
            stages.append(stage_tps(cfg(f"stage-{k}-{i}", k), engine))
        results[k] = (sum(raws) / len(raws), sum(stages) / len(stages))
    return results


def report(args: argparse.Namespace, results: dict[int, tuple[float, float]]) -> None:
    print(
        f"\ngenerate benchmark: {args.problems} problems x n={args.n}, max_tokens={args.max_tokens}, "
        f"tiny Qwen2 (4 layers), vllm {__import__('vllm').__version__}, {args.rounds} alternating rounds"
    )
    for k, (r, s) in results.items():
        target = 0.95 if k == 0 else 0.85
        print(
            f"  logprobs={k}: raw LLM.generate {r:,.0f} tok/s, distill generate {s:,.0f} tok/s, "
            f"ratio {s / r:.3f} (target >= {target})"
        )


def main() -> None:
    args = parse_args()

    from pipeline.generate.engine_vllm import VLLMEngine
    from pipeline.generate.stage import run
    from pipeline.preflight import load_tokenizer
    from pipeline.tiny_model import TinyModelSpec, build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    model = build_tiny_model(tmp / "model", TinyModelSpec(layers=4))
    problems = write_problems(tmp / "problems.jsonl", args.problems)

    def cfg(out: str, k: int) -> Any:
        return stage_config(args, model, problems, tmp / out, k)

    base = cfg("warmup", 0)
    tokenizer = load_tokenizer(base)
    engine = VLLMEngine(base, tokenizer)
    prompts = raw_prompts(base, tokenizer, engine, args.n)
    run(cfg("warmup", 5), engine=engine)  # first calls compile and warm caches
    report(args, measure(args, engine, prompts, base, cfg))
    engine.close()


if __name__ == "__main__":
    main()
