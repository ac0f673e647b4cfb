"""The cards and files `distill push --dry-run` stages from real stage outputs, with no token and no network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from pipeline.push import hub, release
from pipeline.records.manifest import read_manifest
from pipeline.records.write import write_json
from tests.stage_outputs import EVAL, made_fixture, train  # noqa: F401  (the `made` fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HF_TOKEN and no saved login, whatever the machine has; conftest keeps huggingface_hub offline."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def dry_run(folder: Path, stage: Path, *options: str, repo: str = "test-org/student") -> str:
    """Stage `folder` for `repo` into `stage`; returns the main card."""
    assert hub.main([str(folder), "--repo-id", repo, "--dry-run", "--stage-dir", str(stage), *options]) == 0
    return (stage / "main" / "README.md").read_text()


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def report_figures(data: Path) -> set[str]:
    """Card lines that must carry the filter report's figures: one table row per step, the teacher's pass rate."""
    report = json.loads((data / "report.json").read_text())
    rows = set()
    for s in report["steps"]:
        reasons = ", ".join(f"{r}: {n}" for r, n in s["reasons"].items()) or "-"
        rows.add(f"| `{s['step']}` | {s['in']} | {s['in'] - s['dropped']} | {reasons} |")
    rows.add(f"| **total** | {report['input']} | {report['kept']} | {report['rejected']} rejected |")
    rates, verdicts = report["pass_rate"], ", ".join(f"{k} {v}" for k, v in report["verdicts"].items())
    rows.add(f"Teacher pass rate per problem: mean {100 * rates['mean']:.1f}% over {rates['graded_problems']} graded "
             f"problems ({rates['solved_by_none']} solved by no sample, {rates['solved_by_all']} by all); "
             f"verdicts: {verdicts}.")  # fmt: skip
    return rows


def first_user_turn(data: Path) -> str:
    import pyarrow.parquet as pq

    first = sorted((data / "data").glob("*.parquet"))[0]
    prompt = pq.read_table(first, columns=["prompt"]).column("prompt")[0].as_py()
    return [m["content"] for m in prompt if m["role"] == "user"][-1]


def test_model_card_tells_how_the_student_was_made(made, tmp_path, capfd):
    card = dry_run(made["student"], tmp_path / "stage", "--license", "apache-2.0")
    counts = read_manifest(made["student"])["counts"]
    assert "license: apache-2.0" in card and "tags:\n- distillation\n- reasoning\n" in card
    assert "pipeline_tag: text-generation" in card and "base_model:" not in card  # a local base has no Hub id
    assert f"distilled from `{made['teacher']}`" in card and "sampling temperature 0.6, top_p 0.95" in card
    assert f"| {counts['final_loss']:.4g} |" in card and "| `learning_rate` | 0.003 |" in card
    assert "4 per device x 1 accumulated x 1 process = 4" in card
    assert report_figures(made["data"]) <= set(card.splitlines())
    assert "| `math` | 16 | 14 | wrong: 2 |" in card  # the two answers to the problem with a wrong gold
    assert (
        "| student | `test-org/student` | 41.2 ± 2.1 |" in card
        and "| base | `tiny-base` | 10.5 ± 1.4 |" in card
    )
    (score,) = ModelCard(card).data.eval_results  # the student's own score, as the Hub reads it
    assert (score.dataset_name, score.metric_type, score.metric_value) == ("math500", "pass@1", 41.25)
    assert "temperature=0.6, top_p=0.95, max_new_tokens=48" in card and "Please reason step by step" in card
    assert "Trained on 7 examples from `toy` (7)" in card and "training sequences at 256 tokens" in card
    first = first_user_turn(made["data"])  # the usage example asks a problem of the kind it learnt
    assert repr([{"role": "user", "content": first}]) in card and "first 10 positive odd" not in card
    assert "None" not in card and "null" not in card.split("```yaml")[0]  # the recipe itself may say null
    out = capfd.readouterr().out
    assert (
        f"model card: {tmp_path / 'stage' / 'main' / 'README.md'}" in out
        and "dry run: nothing uploaded" in out
    )
    size = (made["student"] / "model.safetensors").stat().st_size
    assert f"{size:>14,}  model.safetensors" in out


def test_checkpoints_are_staged_as_branches_without_training_state(made, tmp_path):
    dry_run(made["student"], tmp_path / "stage", "--checkpoints")
    model = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "chat_template.jinja", "README.md"}  # fmt: skip
    assert files(tmp_path / "stage" / "main") == model | {"manifest.json", "eval/results.json"}
    for step in (6, 12):
        assert files(tmp_path / "stage" / f"checkpoint-{step}") == model | {"trainer_state.json"}
    assert "training step 6 of 12" in (tmp_path / "stage" / "checkpoint-6" / "README.md").read_text()


@pytest.mark.parametrize(("path", "kept"), [
    ("model.safetensors", True), ("eval/results.json", True), ("checkpoint-6/model.safetensors", False),
    ("runs/Nov22/events.out.tfevents", False), ("training_args.bin", False), (".cache/x", False),
    ("shard.json.tmp", False), ("README.md", False),
])  # fmt: skip
def test_default_selection_leaves_out_junk_unless_included(tmp_path, path, kept):
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_text("x")
    assert (path in release.select(tmp_path, release.SKIP["model"], [])) is kept
    forced = path in release.select(tmp_path, release.SKIP["model"], [path])
    assert forced is not (path.startswith(".") or path.endswith(".tmp"))  # hidden and temporaries: never


def test_adapter_card_names_its_base_and_loads_it_with_peft(made, tiny_model_dir, tmp_path):
    lora = train(tiny_model_dir, made["data"], tmp_path / "lora", "peft.method=lora", "peft.merge=true",
                 "peft.lora={r: 8, lora_alpha: 16, lora_dropout: 0.0, target_modules: all-linear}",
                 "trainer.max_steps=4", "trainer.save_steps=4")  # fmt: skip
    results = write_json(tmp_path / "elsewhere.json", EVAL)
    card = dry_run(lora, tmp_path / "a", "--base-model", "test-org/tiny-base", "--eval", str(results))
    assert "library_name: peft\nbase_model: test-org/tiny-base\nbase_model_relation: adapter\n" in card
    assert "A LoRA adapter for `test-org/tiny-base`" in card and "| lora.r | 8 |" in card
    assert 'base = AutoModelForCausalLM.from_pretrained("test-org/tiny-base"' in card
    assert 'model = PeftModel.from_pretrained(base, "test-org/student")' in card
    assert 'LLM(model="test-org/tiny-base", enable_lora=True)' in card and "41.2 ± 2.1" in card
    staged = json.loads((tmp_path / "a" / "main" / "adapter_config.json").read_text())
    assert staged["base_model_name_or_path"] == "test-org/tiny-base"  # PEFT finds the base on the Hub
    assert json.loads((lora / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tiny_model_dir
    )
    assert json.loads((tmp_path / "a" / "main" / "eval" / "results.json").read_text()) == EVAL
    assert "merged/model.safetensors" not in files(
        tmp_path / "a" / "main"
    )  # the merged model is its own repo
    merged = dry_run(lora / "merged", tmp_path / "m", "--base-model", "test-org/tiny-base")
    assert (
        "library_name: transformers\nbase_model: test-org/tiny-base\nbase_model_relation: finetune\n"
        in merged
    )
    assert "A LoRA fine-tune merged into `test-org/tiny-base`" in merged


def test_card_says_what_is_missing_instead_of_failing(made, tmp_path):
    folder = shutil.copytree(
        made["student"], tmp_path / "s", ignore=shutil.ignore_patterns("checkpoint-*", "eval")
    )
    manifest = read_manifest(folder)
    manifest["config"]["data"] = [{"path": str(tmp_path / "moved-away")}, {"hub": "org/some-traces"}]
    manifest["counts"] = {"final_loss": manifest["counts"]["final_loss"]}
    del manifest["template_check"], manifest["git_commit"]
    write_json(folder / "manifest.json", manifest)
    card = dry_run(folder, tmp_path / "stage")
    assert (
        "Not evaluated yet" in card
        and "Teacher: not recorded" in card
        and "datasets:\n- org/some-traces" in card
    )
    assert "Dataset `org/some-traces` (on the Hub): its filter figures are not recorded." in card
    assert "Trained on an unrecorded number of examples from sources not recorded" in card
    assert "None" not in card and "null" not in card.split("```yaml")[0]  # the recipe itself may say null


def test_dataset_card_from_the_filter_report(made, tmp_path):
    card = dry_run(made["data"], tmp_path / "stage", repo="test-org/traces")
    assert files(tmp_path / "stage" / "main") == {"README.md", "data/train-00000-of-00001.parquet", "report.json",
                                                  "report.png", "rejected.jsonl", "manifest.json"}  # fmt: skip
    assert "path: data/*.parquet" in card and "config_name: rejected" in card and "- n<1K" in card
    assert (
        f"Reasoning traces written by `{made['teacher']}`" in card and "![filter report](report.png)" in card
    )
    assert report_figures(made["data"]) <= set(card.splitlines())
    assert "| `teacher_token_ids` |" not in card and "| `reasoning_tokens` | `int64` |" in card
    assert 'load_dataset("test-org/traces", split="train")' in card and "- name: dedup" in card
    assert "None" not in card and "null" not in card.split("```yaml")[0]  # the recipe itself may say null
