"""KD memory: one training step from stored top-20 logprobs against a dense teacher distribution and plain SFT.

    .venv/bin/python bench/kd.py [--vocab 32768 --length 2048 --k 20]

Each variant runs in its own fresh process (so one's allocations cannot hide another's): it builds a tiny
Qwen2 student with a `--vocab`-row output layer and one `--length`-token training example, records its
resident memory, runs one forward + backward, and reports the peak resident memory above that baseline.
  kd      `distill kd`'s KDTrainer.compute_loss (stored top-k, chunked full-vocab log-softmax)
  dense   the same loss with the teacher distribution materialised as a dense [tokens x vocab] tensor and the
          student's full logits at once (what a trainer fed full teacher logits does)
  sft     TRL's plain SFTTrainer.compute_loss on the same example
  fusion  kd with two stored teachers mixed per token (kd.teachers: the data's top-k and a `mode: score` sidecar)
  online  kd with a live teacher (a copy of the student's shape), full-vocabulary KD in chunks
  attention / gram  online plus kd.relations (MiniLM-v2 q/k/v relations, 2 relation heads; Gram matrices), both
          layers mapped: the relation rows are chunked as the logits are
`--repeats N` runs every variant N times (fresh processes) and prints each one's range.
Also prints the sidecar's bytes per token against fp16 full logits. Targets (issue #6): dense / kd >= 4,
kd / sft <= 1.3.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def build(tmp: Path, vocab: int, length: int, k: int):
    """A student folder and the filter-format dataset of one long example with random top-k teacher rows."""
    import numpy as np
    from transformers import AutoTokenizer

    from pipeline.tiny_model import TinyModelSpec, build_tiny_model
    from tests.helpers import write_sft_dataset

    model = build_tiny_model(tmp / "model", TinyModelSpec(vocab_size=vocab, hidden_size=128, layers=2))
    tok = AutoTokenizer.from_pretrained(model)
    rng = np.random.default_rng(0)
    words = ["add", "the", "digits", "carry", "one", "then", "check", "the", "sum", "again"]
    text = "<think>\n" + " ".join(rng.choice(words, size=length)) + "\n</think>\n\n\\boxed{5}"
    prompt = [{"role": "user", "content": "What is 2+3?"}]
    ids = tok.apply_chat_template(
        prompt + [{"role": "assistant", "content": text}], tokenize=True, return_dict=True
    )
    p_len = len(
        tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    completion = ids["input_ids"][p_len:][: length - p_len]
    text = tok.decode(completion[:-1])
    comp_ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
    topk_ids = rng.integers(0, vocab, (len(comp_ids), k)).astype(np.int32)
    topk_ids[:, 0] = comp_ids
    topk_lp = np.sort(-np.abs(rng.normal(2, 1, (len(comp_ids), k))), -1)[:, ::-1].astype(np.float16)
    row = {
        "id": "long/0",
        "prompt": prompt,
        "completion": [{"role": "assistant", "content": text}],
        "teacher_token_ids": comp_ids,
        "teacher_topk_ids": topk_ids.tolist(),
        "teacher_topk_logprobs": topk_lp.tolist(),
    }
    write_sft_dataset(tmp / "data", [row])
    write_second_teacher(tmp / "score", "long/0", np.asarray(comp_ids), vocab, k, rng)
    return model


def write_second_teacher(folder: Path, sample_id: str, comp_ids, vocab: int, k: int, rng) -> None:
    """What `generate mode: score` leaves for another teacher: a top-k sidecar of the same tokens."""
    import numpy as np

    from pipeline.records.logprobs import TopK, write_sidecar

    folder.mkdir(parents=True, exist_ok=True)
    ids = rng.integers(0, vocab, (len(comp_ids), k)).astype(np.int32)
    lps = np.sort(-np.abs(rng.normal(2, 1, (len(comp_ids), k))), -1)[:, ::-1].astype(np.float16)
    top = TopK(comp_ids.astype(np.int32), lps[:, 0].copy(), ids, lps)
    write_sidecar(folder / "logprobs-00000.safetensors", [sample_id], [top])


ONLINE = ["kd.teacher=online", "kd.teacher_model={tmp}/model"]
VARIANTS = {
    "fusion": ["kd.teachers=[{{weight: 0.5}}, {{weight: 0.5, scores: {tmp}/score}}]"],
    "online": ONLINE,
    "attention": [
        *ONLINE,
        "kd.relations={{weight: 1.0, kind: attention, heads: 2, layers: {{'1': 1, '2': 2}}}}",
    ],
    "gram": [*ONLINE, "kd.relations={{weight: 1.0, kind: gram, layers: {{'1': 1, '2': 2}}}}"],
}
ORDER = ("kd", "dense", "sft", "fusion", "online", "attention", "gram")


def measure(variant: str, tmp: Path, length: int) -> float:
    import gc

    from pipeline.config import load_config
    from pipeline.train.kd.config import KDStageConfig
    from pipeline.train.kd.stage import build_kd_trainer
    from pipeline.train.sft.stage import build_trainer

    overrides = [
        f"model={tmp / 'model'}",
        f"data=[{{path: {tmp / 'data'}}}]",
        f"output={tmp / variant}",
        f"trainer.max_length={length + 64}",
        "trainer.report_to=none",
        "trainer.gradient_checkpointing=false",
        "trainer.per_device_train_batch_size=1",
    ]
    extra = [o.format(tmp=tmp) for o in VARIANTS.get(variant, [])]
    cfg = load_config(KDStageConfig, None, overrides + extra)
    if variant == "sft":
        trainer, _ = build_trainer(cfg)
    elif cfg.kd.teacher == "online":
        from pipeline.preflight import load_tokenizer
        from pipeline.train.kd.stage import load_teacher

        trainer, _ = build_kd_trainer(cfg, load_teacher(cfg, load_tokenizer(cfg)))
    else:
        trainer, _ = build_kd_trainer(cfg)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    gc.collect()
    base = rss_mb()
    if variant == "dense":
        loss = dense_step(trainer.model, batch)
    else:
        loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return max(0.0, peak - base)


def dense_step(model, batch):
    """KD with the teacher's distribution as a dense [tokens x vocab] tensor (top-k scattered, the rest 0)."""
    import torch

    labels = batch["labels"]
    logits = (
        model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits[:, :-1].float()
    )
    mask = labels[:, 1:] != -100
    ids, lps = batch["teacher_topk_ids"][:, 1:], batch["teacher_topk_logprobs"][:, 1:]
    teacher = torch.zeros_like(logits).scatter_(-1, ids.long(), lps.exp())
    student = torch.log_softmax(logits, -1)
    kl = (teacher * (torch.log(teacher.clamp_min(1e-30)) - student)).sum(-1)
    ce = torch.nn.functional.cross_entropy(logits[mask], labels[:, 1:][mask])
    return 0.5 * ce + 0.5 * kl[mask].mean()


def run_variants(tmp: Path, length: int, repeats: int = 1) -> dict[str, list[float]]:
    """Each variant's peak MB per repeat, each measured in a fresh child process of this script."""
    results: dict[str, list[float]] = {v: [] for v in ORDER}
    for _ in range(repeats):
        for variant in ORDER:
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--dir", str(tmp), "--length", str(length)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[variant].append(json.loads(out.stdout.strip().splitlines()[-1])["mb"])
    return results


def spread(values: list[float], fmt: str = ".0f") -> str:
    lo, hi = min(values), max(values)
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}}-{hi:{fmt}}"


def ratios(a: list[float], b: list[float]) -> str:
    """a / b per repeat (the two measured in the same round), as a range."""
    return spread([x / y for x, y in zip(a, b, strict=True)], ".2f")


def report(args: argparse.Namespace, results: dict[str, list[float]]) -> None:
    from pipeline.train.kd.stage import sidecar_bytes_per_token

    r = results
    sidecar = sidecar_bytes_per_token(args.k)
    print(
        f"\nkd benchmark: one training step, vocab {args.vocab:,}, sequence {args.length}, top-{args.k}, "
        f"peak resident memory above the process's baseline, {len(r['kd'])} repeat(s) (ranges)"
    )
    rows = [
        ("kd (stored top-k, chunked)", "kd", ""),
        ("dense teacher distribution", "dense", f"dense / kd = {ratios(r['dense'], r['kd'])} (target >= 4)"),
        ("plain SFT step (TRL)", "sft", f"kd / sft = {ratios(r['kd'], r['sft'])} (target <= 1.3)"),
        ("fusion of 2 stored teachers", "fusion", f"fusion / kd = {ratios(r['fusion'], r['kd'])}"),
        ("online teacher", "online", f"online / sft = {ratios(r['online'], r['sft'])}"),
        ("online + attention relations", "attention", f"/ online = {ratios(r['attention'], r['online'])}"),
        ("online + gram relations", "gram", f"/ online = {ratios(r['gram'], r['online'])}"),
    ]
    for label, key, note in rows:
        print(f"  {label + ':':32s}{spread(r[key]):>12s} MB   {note}")
    print(
        f"  sidecar: {sidecar} bytes/token vs fp16 full logits {2 * args.vocab:,} bytes/token "
        f"({2 * args.vocab / sidecar:.0f}x smaller; {2 * 152064 / sidecar:.0f}x for a 152k vocabulary)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--variant")
    ap.add_argument("--dir")
    args = ap.parse_args()
    if args.variant:  # a child: one measurement, printed as JSON
        print(json.dumps({"mb": measure(args.variant, Path(args.dir), args.length)}))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-kd-"))
    build(tmp, args.vocab, args.length, args.k)
    report(args, run_variants(tmp, args.length, args.repeats))


if __name__ == "__main__":
    main()
