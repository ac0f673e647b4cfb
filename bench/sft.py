"""SFT throughput: `distill sft` with packing against a plain TRL SFTTrainer with padding, same run.

    .venv/bin/python bench/sft.py [--examples 96 --rounds 2]

Same tiny model (Qwen2, 4 layers, hidden 128), same dataset of long-tailed lengths like reasoning traces
(log-normal, 32 to 1,536 tokens), one epoch each, alternating. The figure is supervised tokens per second of
training; the padding fraction is the share of batch positions that hold no real token.
Target (issue #5): ratio >= 1.5.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COMMON = {  # trainer settings both sides share
    "num_train_epochs": 1,
    "learning_rate": 1e-3,
    "gradient_checkpointing": False,
    "report_to": "none",
    "logging_steps": 1000,
    "save_strategy": "no",
    "seed": 0,
    "dataloader_drop_last": False,
}


def make_dataset(folder: Path, tokenizer, n: int, seed: int = 0) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 2][:300]
    lengths = np.clip(rng.lognormal(mean=5.3, sigma=0.9, size=n), 32, 1536).astype(int)
    rows = []
    for i, length in enumerate(lengths):
        reasoning = " ".join(rng.choice(words, size=int(length)))
        rows.append(
            {
                "id": f"x{i}/0",
                "prompt": [{"role": "user", "content": f"Problem {i}: add {i} and {i + 1}."}],
                "completion": [
                    {
                        "role": "assistant",
                        "content": f"<think>\n{reasoning}\n</think>\n\n\\boxed{{{2 * i + 1}}}",
                    }
                ],
            }
        )
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train.parquet")
    return folder


def padding_fraction(trainer) -> float:
    real = total = 0
    for batch in trainer.get_train_dataloader():
        mask = batch.get("attention_mask")
        total += batch["input_ids"].numel()
        real += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
    return 1 - real / total


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=2)
    return ap.parse_args()


def stage_config(model: Path, data: Path, output: Path) -> Any:
    """The sft stage's recipe: packing, 2048 tokens x 1 per step."""
    from pipeline.config import load_config
    from pipeline.train.sft.config import SFTStageConfig

    trainer = {**COMMON, "packing": True, "max_length": 2048, "per_device_train_batch_size": 1}
    return load_config(
        SFTStageConfig,
        None,
        [
            f"model={model}",
            f"data=[{{path: {data}}}]",
            f"output={output}",
            f"trainer={json.dumps(trainer)}",
        ],
    )


def plain_trainer(model: Path, data: Path, tokenizer: Any, tmp: Path, out: str) -> Any:
    """A plain TRL SFTTrainer on the stage's data mixture: padded batches of 8, no packing."""
    from trl import SFTConfig, SFTTrainer

    from pipeline.train.data import load_mixture

    cfg = SFTConfig(
        output_dir=str(tmp / out),
        per_device_train_batch_size=8,
        max_length=None,
        use_cpu=True,
        bf16=False,
        **COMMON,
    )
    dataset = load_mixture(stage_config(model, data, tmp / "x").data, seed=0)
    return SFTTrainer(model=str(model), args=cfg, train_dataset=dataset, processing_class=tokenizer)


def alternate(
    rounds: int, tmp: Path, model: Path, data: Path, tokenizer: Any
) -> tuple[list[float], list[float]]:
    """Supervised tok/s of the stage and of the plain trainer, one run each per round: (stage, plain)."""
    from pipeline.train.sft.stage import run, supervised_tokens

    stage_tps, plain_tps = [], []
    for r in range(rounds):
        baseline = plain_trainer(model, data, tokenizer, tmp, f"plain-{r}")
        t = time.perf_counter()
        baseline.train()
        plain_tps.append(supervised_tokens(baseline.train_dataset) / (time.perf_counter() - t))
        cfg = stage_config(model, data, tmp / f"stage-{r}")
        assert run(cfg) == 0
        manifest = json.loads((Path(cfg.output) / "manifest.json").read_text())
        stage_tps.append(manifest["counts"]["supervised_tokens_per_s"])
    return stage_tps, plain_tps


def report(args: argparse.Namespace, s: float, p: float, packed_pad: float, plain_pad: float) -> None:
    print(
        f"\nsft benchmark: {args.examples} examples (log-normal lengths 32-1,536 tokens), tiny Qwen2 4 layers, "
        f"1 epoch, {args.rounds} alternating rounds"
    )
    print(f"  plain TRL SFTTrainer, padding (batch 8):  {p:,.0f} supervised tok/s, padding {plain_pad:.1%}")
    print(f"  distill sft, packing bfd (2048 x 1):      {s:,.0f} supervised tok/s, padding {packed_pad:.1%}")
    print(f"  ratio {s / p:.2f} (target >= 1.5)")


def main() -> None:
    args = parse_args()

    from transformers import AutoTokenizer

    from pipeline.tiny_model import TinyModelSpec, build_tiny_model
    from pipeline.train.sft.stage import build_trainer

    tmp = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    model = build_tiny_model(tmp / "model", TinyModelSpec(layers=4))
    tokenizer = AutoTokenizer.from_pretrained(model)
    data = make_dataset(tmp / "data", tokenizer, args.examples)
    stage_tps, plain_tps = alternate(args.rounds, tmp, model, data, tokenizer)
    packed_pad = padding_fraction(build_trainer(stage_config(model, data, tmp / "probe"))[0])
    plain_pad = padding_fraction(plain_trainer(model, data, tokenizer, tmp, "probe-plain"))
    s, p = sum(stage_tps) / len(stage_tps), sum(plain_tps) / len(plain_tps)
    report(args, s, p, packed_pad, plain_pad)


if __name__ == "__main__":
    main()
