"""Driver memory of generate on Ray for its input: the requests handed to Ray Data, at two input sizes, this code
against the way the driver built them before (dc344d6).

    .venv/bin/python bench/generate_ray_input.py [--small 10000 --large 100000 --n 4 --unit 16 --rounds 2]

Problems are MATH-500's repeated with distinct ids and texts (as bench/generate_plan.py), `--n` samples each, the
tiny model's tokenizer and chat template, on a one-node Ray cluster started here. Each measurement is its own
`distill`-like driver process: it plans (not counted), connects, then turns every request into Ray Data blocks:
- now: `RayEngine.dataset` (20,000 samples at a time, each row carrying its request);
- before (dc344d6's `RayEngine.run`, reproduced here): a dict of every request, a list of every row, one
  `ray.data.from_items`.
Figures: the driver's private memory (RssAnon, sampled every 20 ms) held after and at peak, minus before; per
sample; large over small.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CHILD = r"""
import json, sys, threading, time
mode = sys.argv[1]
from pipeline.config import load_config
from pipeline.generate import engine_ray
from pipeline.generate.config import GenerateConfig
from pipeline.generate.engine_vllm import sampling_kwargs
from pipeline.generate.plan import make_plan
from pipeline.preflight import load_tokenizer
import ray

cfg = load_config(GenerateConfig, None, sys.argv[2:])
plan = make_plan(cfg, load_tokenizer(cfg), None, allow_incomplete=False)
ray.init(address="auto", logging_level="ERROR")


def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024


peak, done = [0.0], threading.Event()


def watch():
    while not done.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.02)


base = anon()
threading.Thread(target=watch, daemon=True).start()
t = time.perf_counter()
requests = plan.requests(plan.max_model_len)
if mode == "before":
    by_id = {r.sample_id: r for r in requests}
    rows = [{"sample_id": r.sample_id, "tokenized_prompt": r.prompt_ids, "sampling_params": sampling_kwargs(cfg, r)}
            for r in by_id.values()]
    dataset = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // cfg.ray.unit))
    samples = len(rows)
else:
    dataset, samples, units = engine_ray.RayEngine.dataset(cfg, requests)
seconds = time.perf_counter() - t
held = anon()
done.set()
print(json.dumps({"samples": samples, "seconds": seconds, "held_mb": held - base, "peak_mb": max(peak[0], held) - base}))
"""


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--unit", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    from generate_plan import write_problems
    from ray.cluster_utils import Cluster

    from pipeline.tiny_model import TinyModelSpec, build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-input-"))
    model = build_tiny_model(tmp / "model", TinyModelSpec(layers=1))
    inputs = {
        count: write_problems(tmp / f"problems-{count}.jsonl", count) for count in (args.small, args.large)
    }
    cluster = Cluster(
        initialize_head=True, connect=False, head_node_args={"num_cpus": 2, "include_dashboard": False}
    )
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        for i in range(args.rounds):
            for count, problems in inputs.items():
                for mode in ("before", "now"):
                    cmd = [
                        sys.executable, "-c", CHILD, mode, f"model={model}", f"problems.path={problems}",
                        f"output={tmp / f'out-{mode}-{count}-{i}'}", f"sampling.n={args.n}", "launch=ray",
                        f"ray.unit={args.unit}", "engine={max_model_len: 2048}",
                    ]  # fmt: skip
                    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
                    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
                    if r.returncode != 0 or not lines:
                        sys.exit(f"bench: {mode} at {count} problems failed:\n{r.stderr[-3000:]}")
                    results.setdefault((mode, count), []).append(json.loads(lines[-1]))
    finally:
        cluster.shutdown()
    print(
        f"\ngenerate on Ray, the driver's input: MATH-500 problems x n={args.n}, unit {args.unit}, "
        f"{args.rounds} rounds, each measurement its own driver process (RssAnon minus before)"
    )
    for mode in ("before", "now"):
        for count in inputs:
            runs = results[(mode, count)]
            held = [r["held_mb"] for r in runs]
            peak = [r["peak_mb"] for r in runs]
            per = [r["peak_mb"] * 2**20 / r["samples"] for r in runs]
            secs = [r["seconds"] for r in runs]
            print(
                f"  {mode:6s} {count:>7,} problems ({runs[0]['samples']:,} samples): held {min(held):,.0f}-"
                f"{max(held):,.0f} MB, peak {min(peak):,.0f}-{max(peak):,.0f} MB "
                f"({min(per):,.0f}-{max(per):,.0f} B a sample), {min(secs):.1f}-{max(secs):.1f} s"
            )
        ratios = [
            big["peak_mb"] / small["peak_mb"]
            for small, big in zip(results[(mode, args.small)], results[(mode, args.large)], strict=True)
        ]
        print(f"  {mode:6s} peak {args.large:,} / {args.small:,}: {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
