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

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from vllm import SamplingParams

    from pipeline.config import load_config
    from pipeline.generate.config import GenerateConfig
    from pipeline.generate.engine_vllm import VLLMEngine
    from pipeline.generate.plan import load_work, render_requests
    from pipeline.generate.stage import run
    from pipeline.preflight import load_tokenizer
    from pipeline.tiny_model import TinyModelSpec, build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    model = build_tiny_model(tmp / "model", TinyModelSpec(layers=4))
    problems = tmp / "problems.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "problem": f"Compute {i} * {i + 3} - {i % 7}."}) + "\n"
            for i in range(args.problems)
        )
    )

    def cfg(out: str, k: int) -> GenerateConfig:
        return load_config(
            GenerateConfig,
            None,
            [
                f"model={model}",
                f"problems.path={problems}",
                f"output={tmp / out}",
                f"sampling.n={args.n}",
                f"sampling.max_tokens={args.max_tokens}",
                f"logprobs={k}",
                "engine={max_model_len: 1024}",
            ],
        )

    base = cfg("warmup", 0)
    tokenizer = load_tokenizer(base)
    engine = VLLMEngine(base, tokenizer)
    prompts = [
        {"prompt_token_ids": r.prompt_ids}
        for r in render_requests(base, load_work(base, None)[:: args.n], tokenizer, engine.max_model_len)
    ]
    run(cfg("warmup", 5), engine=engine)  # first calls compile and warm caches

    def raw(k: int) -> float:
        s = base.sampling
        params = SamplingParams(
            n=args.n,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=args.max_tokens,
            logprobs=k or None,
            skip_special_tokens=False,
        )
        t = time.perf_counter()
        outs = engine.llm.generate(prompts, params, use_tqdm=False)
        return sum(len(o.token_ids) for r in outs for o in r.outputs) / (time.perf_counter() - t)

    def stage(k: int, i: int) -> float:
        c = cfg(f"stage-{k}-{i}", k)
        t = time.perf_counter()
        run(c, engine=engine)
        seconds = time.perf_counter() - t
        manifest = json.loads((Path(c.output) / "manifest.json").read_text())
        return manifest["counts"]["completion_tokens"] / seconds

    results = {}
    for k in (0, 5):
        raws, stages = [], []
        for i in range(args.rounds):
            raws.append(raw(k))
            stages.append(stage(k, i))
        results[k] = (sum(raws) / len(raws), sum(stages) / len(stages))
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
    engine.close()


if __name__ == "__main__":
    main()
