"""A model card's eval scores as the Hub's machine-readable metadata (`model-index`), read back by huggingface_hub
the way the Hub reads it."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard

from pipeline.push.lineage import EvalResults, ModelFacts
from pipeline.push.model_card import model_front_matter


def facts(folder: Path, models: list[dict]) -> ModelFacts:
    results = EvalResults(path="results.json", models=models, benchmarks=["math500", "toy"], settings={})
    manifest = {"stage": "sft", "config": {"model": "Qwen/Qwen2.5-Math-1.5B"}}
    return ModelFacts(
        folder, "full", manifest, "Qwen/Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-Math-1.5B", [], results, None
    )


def scores(card: str) -> list[tuple]:
    data = ModelCard(card + "\n# card\n").data
    return [
        (r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_value, r.task_type)
        for r in data.eval_results or []
    ]


def test_the_pushed_models_scores_become_hub_eval_results(tmp_path):
    models = [
        {"model": "runs/base", "label": "base", "metrics": {"math500": {"pass@1": 0.105}}},
        {
            "model": str(tmp_path),  # evaluated from the folder being pushed
            "label": "student",
            "metrics": {
                "math500": {
                    "pass@1": 0.4125,
                    "pass@1_stderr": 0.0213,
                    "pass@4": 0.6,
                    "cons@k": None,
                    "n": 500,
                },
                "toy": {"pass@1": 0.876, "mean_output_tokens": 31.0},
            },
        },
    ]
    card = model_front_matter(facts(tmp_path, models), [], "me/student-1.5b")
    assert scores(card) == [
        ("HuggingFaceH4/MATH-500", "math500", "test", "pass@1", 41.25, "text-generation"),
        ("HuggingFaceH4/MATH-500", "math500", "test", "pass@4", 60.0, "text-generation"),
        ("toy", "toy", "heldout", "pass@1", 87.6, "text-generation"),
    ]
    assert ModelCard(card + "\n").data.model_name == "student-1.5b"


def test_a_card_without_scores_of_its_own_has_no_model_index(tmp_path):
    others = [
        {"model": "a/one", "label": "one", "metrics": {"math500": {"pass@1": 0.1}}},
        {"model": "b/two", "label": "two", "metrics": {"math500": {"pass@1": 0.2}}},
    ]
    card = model_front_matter(facts(tmp_path, others), [], "me/student")
    assert "model-index" not in card and scores(card) == []
    only = [{"model": "elsewhere/copy", "label": "student", "metrics": {"math500": {"pass@1": 0.3}}}]
    assert scores(model_front_matter(facts(tmp_path, only), [], "me/student"))[0][4] == 30.0


def test_a_kd_cards_stage_line_names_the_fusion_and_the_relations():
    from pipeline.push.model_card import stage_line

    kd = {
        "teacher": "offline",
        "teachers": [
            {"weight": 0.7, "model": None, "scores": None},
            {"weight": 0.3, "scores": "runs/score-qwq"},
        ],
        "relations": {"weight": 0.0},
    }
    line = stage_line({"stage": "kd", "config": {"kd": kd}})
    assert line.endswith("(stored: fusion of `the data's stored top-k` 0.7, `runs/score-qwq` 0.3)")
    online = {"teacher": "online", "teacher_model": "T", "relations": {"weight": 1.0, "kind": "attention"}}
    assert stage_line({"stage": "kd", "config": {"kd": online}}).endswith(" + attention relations")
    plain = {"teacher": "offline", "teachers": [], "hidden": {"weight": 0.0}, "relations": {"weight": 0.0}}
    assert stage_line({"stage": "kd", "config": {"kd": plain}}) == stage_line({"stage": "kd"})
