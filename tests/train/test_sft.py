"""The sft stage with a real TRL SFTTrainer on a tiny model and data in the filter stage's format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.config import load_config
from pipeline.records.manifest import read_manifest
from pipeline.train.sft.config import SFTStageConfig
from pipeline.train.sft.stage import build_trainer, run
from pipeline.train.template_check import TemplateError
from tests.conftest import REPO
from tests.helpers import PROBLEMS, sft_rows, worked_solution, write_sft_dataset

pytestmark = pytest.mark.slow


def sft_config(model: Path, tmp_path: Path, *overrides: str) -> SFTStageConfig:
    data = tmp_path / "data"
    if not data.exists():
        write_sft_dataset(data)
    base = [
        f"model={model}",
        f"data=[{{path: {data}}}]",
        f"output={tmp_path / 'out'}",
        "trainer.max_steps=12",
        "trainer.per_device_train_batch_size=4",
        "trainer.learning_rate=3.0e-3",
        "trainer.logging_steps=2",
        "trainer.save_steps=6",
        "trainer.gradient_checkpointing=false",
        "trainer.report_to=none",
        "trainer.max_length=256",
        "trainer.seed=0",
    ]
    return load_config(SFTStageConfig, None, base + list(overrides))


def logged_losses(output: str) -> list[float]:
    return [e["loss"] for e in read_manifest(output)["log_history"] if "loss" in e]


def test_full_sft_trains_and_saves_a_student_that_loads(tiny_model_dir, tmp_path):
    cfg = sft_config(tiny_model_dir, tmp_path)
    assert run(cfg) == 0
    manifest = read_manifest(cfg.output)
    counts = manifest["counts"]
    assert (
        counts["global_step"] == 12
        and counts["supervised_tokens"] > 0
        and counts["supervised_tokens_per_s"] > 0
    )
    # examples: the dataset's rows, whatever packing made of them
    assert counts["examples"] == len(sft_rows()) and 0 < counts["training_rows"] <= counts["examples"]
    losses = logged_losses(cfg.output)
    assert losses[-1] < losses[0] * 0.8 and counts["final_loss"] == losses[-1]
    assert manifest["template_check"]["stop_token"] == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(cfg.output)
    assert model.config.model_type == "qwen2"


def test_label_mask_supervises_think_answer_and_eos_only(tiny_model_dir, tmp_path):
    cfg = sft_config(tiny_model_dir, tmp_path)
    trainer, _ = build_trainer(cfg)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = {r["id"]: r for r in sft_rows()}
    prepared = trainer.train_dataset
    assert len(prepared) == len(PROBLEMS)
    for example, raw in zip(prepared, (rows[f"add-{a}-{b}/0"] for a, b in PROBLEMS), strict=True):
        prompt_ids = tok.apply_chat_template(
            raw["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        completion_ids = tok.encode(raw["completion"][0]["content"], add_special_tokens=False) + [
            tok.eos_token_id
        ]
        assert example["input_ids"] == prompt_ids + completion_ids
        assert example["labels"] == [-100] * len(prompt_ids) + completion_ids  # token by token


def token_loss_sums(trainer) -> tuple[float, int]:
    """Sum of per-token cross-entropy over every supervised token of the training set, and their count."""
    total, count = 0.0, 0
    model = trainer.model.eval()
    with torch.no_grad():
        for batch in trainer.get_train_dataloader():
            labels = batch.pop("labels")
            logits = model(**batch, use_cache=False).logits[:, :-1].double()
            target = labels[:, 1:]
            total += torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), target, ignore_index=-100, reduction="sum"
            ).item()
            count += int((target != -100).sum())
    return total, count


def test_packed_batches_give_the_same_loss_as_padded_ones(tiny_model_dir, tmp_path):
    rows = sft_rows()
    rows[1]["completion"][0]["content"] = (
        worked_solution(7, 4) * 3
    )  # lengths differ, so padding and packing matter
    write_sft_dataset(tmp_path / "data", rows)
    padded, _ = build_trainer(sft_config(tiny_model_dir, tmp_path, "trainer.per_device_train_batch_size=3"))
    write_sft_dataset(tmp_path / "p" / "data", rows)
    packed, _ = build_trainer(
        sft_config(
            tiny_model_dir,
            tmp_path / "p",
            "trainer.packing=true",
            "trainer.per_device_train_batch_size=2",
            "trainer.max_length=512",
        )
    )
    packed.model.load_state_dict(padded.model.state_dict())
    assert "position_ids" in next(iter(packed.get_train_dataloader()))  # sequences share rows
    (a, n_a), (b, n_b) = token_loss_sums(padded), token_loss_sums(packed)
    assert n_a == n_b
    assert a / n_a == pytest.approx(b / n_b, rel=1e-5)


def test_resume_continues_the_step_count(tiny_model_dir, tmp_path):
    first = sft_config(tiny_model_dir, tmp_path, "trainer.max_steps=6", "trainer.save_steps=3")
    assert run(first) == 0
    assert (Path(first.output) / "checkpoint-6").is_dir()
    second = sft_config(tiny_model_dir, tmp_path, "trainer.max_steps=10", "trainer.save_steps=3")
    assert run(second) == 0
    manifest = read_manifest(second.output)
    assert manifest["resumed_from"].endswith("checkpoint-6") and manifest["counts"]["global_step"] == 10
    steps = [e["step"] for e in manifest["log_history"] if "loss" in e]
    assert steps == sorted(steps) and steps[-1] == 10
    # the same finished command again trains nothing (resuming from checkpoint-10 would add a step 11)
    before = (Path(second.output) / "manifest.json").read_bytes()
    checkpoints = {p.name for p in Path(second.output).glob("checkpoint-*")}
    assert run(second) == 0
    assert (Path(second.output) / "manifest.json").read_bytes() == before
    assert {p.name for p in Path(second.output).glob("checkpoint-*")} == checkpoints


def sft_recipe(model: Path, tmp_path: Path, *extra: str) -> Path:
    """The sft_config settings as a recipe file, for runs of the real command."""
    write_sft_dataset(tmp_path / "data")
    lines = [f"model: {model}", f"data: [{{path: {tmp_path / 'data'}}}]", f"output: {tmp_path / 'out'}",
             "trainer: {max_steps: 6, save_steps: 3, per_device_train_batch_size: 4, learning_rate: 3.0e-3, "
             "logging_steps: 2, gradient_checkpointing: false, report_to: none, max_length: 256, seed: 0}",
             *extra]  # fmt: skip
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("stage: sft\n" + "\n".join(lines) + "\n")
    return recipe


@pytest.mark.parametrize("point", ["checkpoint:mid-save", "checkpoint:mid-state"])
def test_a_kill_while_saving_a_checkpoint_resumes_from_the_last_complete_one(tiny_model_dir, tmp_path, point):
    from pipeline.outputs import FolderLock
    from tests.conftest import distill_main, run_distill

    recipe = sft_recipe(tiny_model_dir, tmp_path)
    out = tmp_path / "out"
    # SIGKILL inside the second checkpoint's save (checkpoint-6): in its weights write, after its config.json was
    # written; or in the write of its trainer_state.json (the last file), half of it on disk
    killed = run_distill("sft", "--config", str(recipe), env={"DISTILL_TEST_KILL_AT": f"{point}@2"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "checkpoint-6" / "config.json").exists() and read_manifest(out) is None
    state = out / "checkpoint-6" / "trainer_state.json"
    if point == "checkpoint:mid-save":
        assert not state.exists()
    else:  # weights whole, the state cut short: what a resume used to pick, then die reading
        assert (out / "checkpoint-6" / "model.safetensors").exists() and state.stat().st_size > 0
        with pytest.raises(ValueError):
            json.loads(state.read_text())
    # were that run still training (its lock held; here by this process, through another open file), the same
    # command again is refused in one line, before it removes the checkpoint being saved or trains beside it
    saving = {f.name: f.read_bytes() for f in (out / "checkpoint-6").iterdir()}
    other = FolderLock("sft")
    other.take(out)
    refused = distill_main("sft", "--config", str(recipe))
    other.release()
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert f"{out} is being written by another distill sft run" in refused.stderr
    assert {f.name: f.read_bytes() for f in (out / "checkpoint-6").iterdir()} == saving
    resumed = distill_main("sft", "--config", str(recipe))  # in this process: only the kill needs its own
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "skipping" in resumed.stderr and "checkpoint-6: incomplete" in resumed.stderr
    manifest = read_manifest(out)
    assert manifest["resumed_from"].endswith("checkpoint-3") and manifest["counts"]["global_step"] == 6
    assert (out / "checkpoint-6" / "trainer_state.json").exists()


def test_sft_refuses_data_without_a_manifest_naming_the_stage_to_rerun(tiny_model_dir, tmp_path):
    from tests.conftest import distill_main

    recipe = sft_recipe(tiny_model_dir, tmp_path)
    (tmp_path / "data" / "manifest.json").unlink()  # a filter run that never finished
    result = distill_main("sft", "--config", str(recipe))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'data'}: field 'data[0].path': no manifest.json")
    assert "rerun `distill filter`" in result.stderr and not (tmp_path / "out").exists()
    assert "Traceback" not in result.stderr


def test_lora_saves_an_adapter_and_a_merged_model_that_loads_alone(tiny_model_dir, tmp_path):
    from peft import PeftModel

    cfg = sft_config(
        tiny_model_dir,
        tmp_path,
        "peft.method=lora",
        "peft.merge=true",
        "peft.lora={r: 8, lora_alpha: 16, lora_dropout: 0.0, target_modules: all-linear}",
    )
    assert run(cfg) == 0
    out = Path(cfg.output)
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = AutoTokenizer.from_pretrained(out / "merged")("What is 2+3?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        m, a, b = (x(ids).logits for x in (merged, adapted, base))
    assert torch.allclose(m, a, atol=1e-5) and not torch.allclose(m, b, atol=1e-3)
    assert read_manifest(out)["merged"].endswith("merged")


def test_qlora_without_a_gpu_is_a_clear_error(tiny_model_dir, tmp_path):
    cfg = sft_config(tiny_model_dir, tmp_path, "peft.method=qlora")
    with pytest.raises(RuntimeError, match="qlora .* needs a CUDA GPU"):
        run(cfg)


DROPS_THINK = (  # R1-Distill's inference template: everything up to </think> is cut from assistant turns
    "{%- for m in messages %}{%- if m['role'] == 'assistant' %}{% set c = m['content'].split('</think>')[-1] %}"
    "{{- '<|im_start|>assistant\\n' + c + '<|im_end|>' }}{%- else %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
NO_EOS = (  # a base-model template that never closes the assistant turn
    "{%- for m in messages %}{%- if m['role'] == 'assistant' %}{{- 'Assistant: ' + m['content'] }}"
    "{%- else %}{{- 'User: ' + m['content'] + '\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- 'Assistant: ' }}{%- endif %}"
)


@pytest.mark.parametrize(
    ("template", "message"), [(DROPS_THINK, "drops the <think> content"), (NO_EOS, "would never stop")]
)
def test_preflight_refuses_templates_that_would_break_the_student(
    tiny_model_dir, tmp_path, template, message
):
    path = tmp_path / "t.jinja"
    path.write_text(template)
    cfg = sft_config(tiny_model_dir, tmp_path, f"trainer.chat_template_path={path}")
    with pytest.raises(TemplateError, match=message):
        run(cfg)
    assert not (Path(cfg.output) / "manifest.json").exists()


def test_two_processes_under_accelerate_launch_train_and_save(tiny_model_dir, tmp_path):
    write_sft_dataset(tmp_path / "data")
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        f"stage: sft\nmodel: {tiny_model_dir}\ndata:\n  - path: {tmp_path / 'data'}\n"
        f"output: {tmp_path / 'out'}\nlaunch:\n  accelerate_config: "
        f"{REPO / 'recipes/accelerate/cpu-2proc.yaml'}\ntrainer:\n  max_steps: 4\n"
        "  per_device_train_batch_size: 2\n  gradient_checkpointing: false\n  report_to: none\n"
        "  max_length: 256\n  save_steps: 4\n"
    )
    exe = Path(sys.executable).with_name("distill")
    result = subprocess.run(
        [str(exe), "sft", "--config", str(recipe)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path / "out")
    assert manifest["counts"]["world_size"] == 2 and manifest["counts"]["global_step"] == 4
    # 2 processes x 2 sequences per step: 4 steps see 16 sequences, i.e. two epochs of the 8 examples.
    assert manifest["counts"]["epochs"] == pytest.approx(2.0)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out") is not None
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "qwen2"


def test_report_to_tensorboard_and_wandb_offline_write_their_logs(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    (tmp_path / "wandb").mkdir()
    cfg = sft_config(
        tiny_model_dir, tmp_path, "trainer.max_steps=4", "trainer.report_to=[tensorboard, wandb]"
    )
    assert run(cfg) == 0
    assert list(Path(cfg.output).rglob("events.out.tfevents.*")), (
        "no tensorboard event file"
    )  # output/runs/...

    assert list((tmp_path / "wandb").rglob("*.wandb")), "no offline wandb run"


# --- reruns into a finished folder: check everything first, touch the output only when training starts --------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_sft(tiny_model_dir, tmp_path_factory) -> Path:
    """A folder with data and a finished 6-step sft run in `out/` (copied by each test)."""
    from tests.conftest import run_distill

    base = tmp_path_factory.mktemp("finished")
    assert run_distill("sft", "--config", str(sft_recipe(tiny_model_dir, base))).returncode == 0
    return base


def finished_copy(finished: Path, model: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(recipe, output) of a private copy of the finished run, reading the same data."""
    import shutil

    shutil.copytree(finished / "out", tmp_path / "out")
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        (finished / "sft.yaml").read_text().replace(str(finished / "out"), str(tmp_path / "out"))
    )
    return recipe, tmp_path / "out"


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    from pipeline.tiny_model import TinyModelSpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("other") / "model", TinyModelSpec(hidden_size=64, seed=1))


@pytest.mark.parametrize("marked", [True, False], ids=["marked", "older-unmarked"])
def test_a_rerun_with_another_model_is_refused_before_anything_is_touched(
    tiny_model_dir, finished_sft, other_model, tmp_path, marked
):
    from pipeline.handoff import require_trained_model
    from tests.conftest import distill_main

    recipe, out = finished_copy(finished_sft, tiny_model_dir, tmp_path)
    if not marked:  # a folder written before outputs were marked: the checkpoints' shapes are compared
        (out / ".distill-stage.json").unlink()
    before = _snapshot(out)
    result = distill_main("sft", "--config", str(recipe), f"model={other_model}", "trainer.max_steps=9")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{out} holds checkpoints of another run (checkpoint-6); changed: " in result.stderr
    changed = f"model: '{tiny_model_dir}' -> '{other_model}'" if marked else "model hidden_size: 64 -> 128"
    assert changed.replace("64 -> 128", "128 -> 64") in result.stderr, result.stderr
    assert _snapshot(out) == before  # manifest, checkpoints, weights: nothing removed, nothing added
    require_trained_model(str(out))  # eval and push still take the finished model


def test_a_rerun_refused_by_a_preflight_check_leaves_the_finished_model_finished(
    tiny_model_dir, finished_sft, tmp_path
):
    from pipeline.handoff import require_trained_model
    from tests.conftest import distill_main

    recipe, out = finished_copy(finished_sft, tiny_model_dir, tmp_path)
    before = _snapshot(out)
    broken = tmp_path / "t.jinja"  # drops the reasoning: the template check refuses it after the model loads
    broken.write_text("{% for m in messages %}{{ m['content'].split('</think>')[-1] }}<|im_end|>{% endfor %}")
    result = distill_main("sft", "--config", str(recipe), "trainer.max_steps=9",
                          f"trainer.chat_template_path={broken}")  # fmt: skip
    assert result.returncode == 2 and "the chat template drops the <think> content" in result.stderr, (
        result.stderr
    )
    assert _snapshot(out) == before
    require_trained_model(str(out))


def test_another_stage_cannot_take_over_a_trained_model(tiny_model_dir, finished_sft, tmp_path):
    from tests.conftest import distill_main

    recipe, out = finished_copy(finished_sft, tiny_model_dir, tmp_path)
    before = _snapshot(out)
    kd = tmp_path / "kd.yaml"
    kd.write_text(recipe.read_text().replace("stage: sft", "stage: kd"))
    result = distill_main("kd", "--config", str(kd))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        f"{out} holds a finished sft output (manifest.json); distill kd replaces only its own"
        in result.stderr
    )
    assert _snapshot(out) == before
