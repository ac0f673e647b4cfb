"""The model card of a pushed student (and the short card of each checkpoint branch), from lineage facts.

    text = model_card(read_model_facts(Path("runs/sft")), "me/student-1.5b", prompt_text)

The prose is pipeline/templates/model_card.md; this module turns an sft / kd manifest and what it leads to (the
filter report, the teacher, eval results) into the text each placeholder takes, missing pieces put in words.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.push.card_text import (
    MISSING,
    filter_table,
    grading_line,
    num,
    pct,
    provenance,
    render,
    table,
    teacher_lines,
    yaml_block,
)
from pipeline.push.lineage import EvalResults, ModelFacts

EXAMPLE_PROBLEM = "What is the sum of the first 10 positive odd numbers?"
METHODS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA (4-bit base weights)"}
STAGES = {
    "sft": "supervised fine-tuning on the teacher's traces (TRL `SFTTrainer`)",
    "kd": "knowledge distillation from the teacher's top-k token probabilities",
    "opd": "on-policy distillation from {teachers} (TRL `DistillationTrainer`: the student samples, the teacher "
    "scores every token)",
}
MERGED = {"adapter": " (a merged copy was saved too)", "merged": ", merged into the base", "full": ""}
KINDS = {"adapter": "A LoRA adapter for", "merged": "A LoRA fine-tune merged into", "full": "A fine-tune of"}
RESULTS = {
    "final_loss": "final loss",
    "train_loss": "mean train loss",
    "global_step": "steps",
    "epochs": "epochs",
    "supervised_tokens": "supervised tokens",
    "supervised_tokens_per_s": "tokens/s",
}


def model_front_matter(facts: ModelFacts, dataset_ids: list[str], repo_id: str | None = None) -> str:
    """The card's YAML header; with `repo_id`, this model's eval scores as the Hub's `model-index` too."""
    method = ((facts.manifest.get("config") or {}).get("peft") or {}).get("method", "full")
    relation = "adapter" if facts.flavor == "adapter" else "finetune"
    return yaml_block(
        {
            "library_name": "peft" if facts.flavor == "adapter" else "transformers",
            "base_model": facts.base_id,
            "base_model_relation": relation if facts.base_id else None,
            "license": facts.license,
            "datasets": list(dict.fromkeys([d.hub_id for d in facts.data if d.hub_id] + dataset_ids)),
            "tags": ["distillation", "reasoning", facts.manifest.get("stage", "sft"), "trl"]
            + (["lora"] if method != "full" else []),
            "pipeline_tag": "text-generation",
            "model-index": model_index(facts, repo_id) if repo_id else None,
        }
    )


def own_scores(facts: ModelFacts, repo_id: str) -> dict[str, Any]:
    """The eval entry of the model being pushed: the one evaluated as `repo_id` or from this folder, or the only
    one; {} when the results compare other models only (the card's table still shows them all)."""
    models = facts.eval.models if facts.eval else []
    for entry in models:
        model = str(entry.get("model") or "")
        if model == repo_id or (model and Path(model).resolve() == facts.folder.resolve()):
            return entry
    return models[0] if len(models) == 1 else {}


def model_index(facts: ModelFacts, repo_id: str) -> list[dict[str, Any]] | None:
    """This model's pass@1 (and cons@k, pass@k) per benchmark as Hub eval results (`model-index`), which the
    Hub shows beside the card and on leaderboards; scores in percent, as the card's table."""
    from huggingface_hub import EvalResult, ModelCardData

    from pipeline.records.benchmarks import BENCHMARKS

    results = []
    for bench, metrics in (own_scores(facts, repo_id).get("metrics") or {}).items():
        known = BENCHMARKS.get(bench)
        for metric, value in (metrics or {}).items():
            if not (re.fullmatch(r"(pass|cons)@(\d+|k)", metric) and isinstance(value, int | float)):
                continue  # pass@1_stderr, n, token counts: in the table and results.json, not scores
            results.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type=(known.hub if known and known.hub else bench),
                    dataset_name=bench,
                    dataset_config=known.config if known else None,
                    dataset_split=known.split if known else None,
                    metric_type=metric,
                    metric_name=metric,
                    metric_value=round(100 * value, 2),
                )
            )
    if not results:
        return None
    data = ModelCardData(model_name=repo_id.split("/")[-1], eval_results=results).to_dict()
    return data.get("model-index")


def data_paragraphs(facts: ModelFacts) -> list[str]:
    paragraphs = []
    for data in facts.data:
        if data.manifest is None:
            where = "on the Hub" if data.hub_id else "no filter manifest on disk"
            paragraphs.append(f"Dataset `{data.name}` ({where}): its filter figures are not recorded.")
        else:
            paragraphs.append(
                f"Dataset `{data.name}`: {num(data.kept)} of {num(data.total)} teacher samples kept "
                f"({pct(data.kept_fraction)}), {num(data.examples)} rows.\n\n{grading_line(data)}\n\n"
                + filter_table(data)
            )
    return paragraphs


def recipe_table(facts: ModelFacts) -> str:
    from pipeline.redact import redact

    config = redact(facts.manifest.get("config") or {})  # a card never shows a `trainer.hub_token`
    peft, trainer = config.get("peft") or {}, config.get("trainer") or {}
    method = peft.get("method", "full")
    rows = [
        ["stage", stage_line(facts.manifest)],
        ["method", METHODS.get(method, method) + MERGED[facts.flavor] * bool(peft.get("merge"))],
    ]
    if method != "full":
        rows += [[f"lora.{k}", num(v)] for k, v in (peft.get("lora") or {}).items()]
    for block in ("kd", "opd"):
        rows += [[f"{block}.{k}", num(v)] for k, v in (config.get(block) or {}).items() if v is not None]
    rows += [[f"`{k}`", num(v)] for k, v in trainer.items()]
    if "per_device_train_batch_size" in trainer:
        world = (facts.manifest.get("counts") or {}).get("world_size") or 1
        per, accum = trainer["per_device_train_batch_size"], trainer.get("gradient_accumulation_steps", 1)
        rows.append(
            [
                "sequences per step",
                f"{per} per device x {accum} accumulated x {world} "
                f"process{'es' if world > 1 else ''} = {per * accum * world}",
            ]
        )
    return table(["setting", "value"], rows)


def stage_line(manifest: dict[str, Any]) -> str:
    """What the stage did; opd names its teachers (by source when there are several), kd its method's parts; a
    method of its own (self-distillation, privileged context, mutual learning: pipeline/train/method_names.py)
    first."""
    from pipeline.train.method_names import method_name

    teachers = manifest.get("teachers") or {}
    named = [f"`{t}`" + ("" if src == "*" else f" ({src})") for src, t in teachers.items()]
    line = STAGES.get(manifest.get("stage", ""), MISSING).format(teachers=", ".join(named) or MISSING)
    if manifest.get("stage") == "kd":
        line += kd_method((manifest.get("config") or {}).get("kd") or {})
    how = method_name(manifest)
    return f"{how}, in the {manifest.get('stage')} stage ({line})" if how else line


def kd_method(kd: dict[str, Any]) -> str:
    """How a kd student was made beyond the logit loss: ' (fusion of A 0.7, B 0.3) + attention relations'."""
    parts = []
    fused = kd.get("teachers") or []
    total = sum(t.get("weight") or 0 for t in fused)
    if fused and total > 0:
        names = [t.get("model") or t.get("scores") or "the data's stored top-k" for t in fused]
        mix = ", ".join(f"`{n}` {t['weight'] / total:.2g}" for n, t in zip(names, fused, strict=True))
        parts.append(f" ({'online' if kd.get('teacher') == 'online' else 'stored'}: fusion of {mix})")
    for block, what in (("hidden", "hidden-state matching"), ("relations", "{kind} relations")):
        settings = kd.get(block) or {}
        if settings.get("weight"):
            parts.append(" + " + what.format(kind=settings.get("kind", "attention")))
    return "".join(parts)


def eval_table(results: EvalResults) -> str:
    rows = []
    for entry in results.models:
        cells = []
        for bench in results.benchmarks:
            m = entry["metrics"].get(bench) or {}
            score, err = m.get("pass@1"), m.get("pass@1_stderr")
            cells.append(
                "-" if score is None else f"{100 * score:.1f}" + (f" ± {100 * err:.1f}" if err else "")
            )
        rows.append([str(entry.get("label") or MISSING), f"`{entry.get('model') or MISSING}`", *cells])
    return table(["model", "id", *results.benchmarks], rows)


def summary_values(facts: ModelFacts, repo_id: str) -> dict[str, Any]:
    local = f"a local base model (`{facts.base or MISSING}`, no Hub id)"
    teacher = (
        f"`{facts.teacher.model}`" if facts.teacher else "a teacher not recorded in the data's manifests"
    )
    how = "trained on the teacher's chain-of-thought traces the way DeepSeek-R1's distilled models were made"
    if facts.manifest.get("stage") == "opd":
        teacher = ", ".join(f"`{t}`" for t in dict.fromkeys((facts.manifest.get("teachers") or {}).values()))
        how = (
            "by on-policy distillation: it answered problems itself and learned from the teacher's score of "
            "every token it wrote, the way Qwen3's small models were made"
        )
    return {
        "how": how,
        "name": repo_id.split("/")[-1],
        "repo_id": repo_id,
        "kind": KINDS[facts.flavor],
        "base": f"`{facts.base_id}`" if facts.base_id else local,
        "adapter": facts.flavor == "adapter",
        "teacher": teacher,
        "teacher_lines": teacher_lines(facts.teacher),
        "datasets": data_paragraphs(facts),
    }


def training_values(facts: ModelFacts) -> dict[str, Any]:
    m, counts = facts.manifest, facts.manifest.get("counts") or {}
    stop = (m.get("template_check") or {}).get("stop_token")
    launch = ((m.get("config") or {}).get("launch") or {}).get("accelerate_config")
    runtime = counts.get("train_runtime_s")
    return {
        "recipe_table": recipe_table(facts),
        "trl": num((m.get("packages") or {}).get("trl")),
        "results_table": table(list(RESULTS.values()), [[num(counts.get(k)) for k in RESULTS]]),
        "template_check": f"passed, supervision ends on `{stop}`" if stop else MISSING,
        "processes": num(counts.get("world_size")) + (f" (accelerate config `{launch}`)" if launch else ""),
        "runtime": f"{num(runtime)} s" if runtime else MISSING,
        **provenance(m),
    }


def eval_values(results: EvalResults | None) -> dict[str, str]:
    return {"eval_table": eval_table(results) if results else "", "eval_settings": eval_settings(results)}


def eval_settings(results: EvalResults | None) -> str:
    """The scoring settings in one line (the eval stage records them per model; the first stands for all)."""
    settings = results.settings if results else {}
    first = next((v for v in settings.values() if isinstance(v, dict)), settings)
    sampling = first.get("sampling") or {}
    parts = []
    if sampling:
        parts.append(
            f"temperature {num(sampling.get('temperature'))}, top-p {num(sampling.get('top_p'))}, up to "
            f"{num(sampling.get('max_tokens'))} tokens, {num(first.get('n', sampling.get('n')))} samples "
            "per problem"
        )
    if first.get("backend"):
        parts.append(f"{first['backend']} engine")
    if (first.get("verifiers") or {}).get("math-verify"):
        parts.append(f"graded with math-verify {first['verifiers']['math-verify']}")
    if not parts:
        return MISSING
    return "; ".join(parts) + " (every setting, per model, is in `eval/results.json`)"


def usage_values(facts: ModelFacts, prompt_text: str) -> dict[str, Any]:
    t = facts.teacher
    cap = (t.sampling if t else {}).get("max_tokens")
    # a problem from the training data where there is one: the student is only known to handle those
    seen = next((d.example_user_turn for d in facts.data if d.example_user_turn), None)
    message = seen or prompt_text.replace("{problem}", EXAMPLE_PROBLEM)
    return {
        "prompt": prompt_text,
        "messages": repr([{"role": "user", "content": message}]),
        "max_tokens": cap or 32768,
        "think_prefix": bool(t and t.think_prefix),
        "budget": f"the teacher wrote up to {cap:,} tokens" if cap else "R1 allows up to 32,768 tokens",
        "base_name": facts.base_id or facts.base or "BASE_MODEL",
    }


def limits_values(facts: ModelFacts) -> dict[str, str]:
    sources: Counter[str] = Counter()
    for data in facts.data:
        sources.update(data.sources)
    # the training mixture's rows (a `limit` may take fewer than the datasets hold), else the datasets' rows
    examples = (facts.manifest.get("counts") or {}).get("examples") or sum(
        d.examples or 0 for d in facts.data
    )
    cap = facts.teacher.sampling.get("max_tokens") if facts.teacher else None
    max_length = ((facts.manifest.get("config") or {}).get("trainer") or {}).get("max_length")
    teacher = (
        f"teacher traces capped at {cap:,} tokens" if cap else "the teacher's length cap is not recorded"
    )
    training = (
        f"training sequences at {max_length:,} tokens"
        if max_length
        else "training sequences at TRL's default `max_length`"
    )
    return {
        "examples": f"{examples:,} examples" if examples else "an unrecorded number of examples",
        "sources": ", ".join(f"`{k}` ({v:,})" for k, v in sources.items()) or "sources not recorded",
        "length_cap": f"{teacher}, {training}",
    }


def model_card(
    facts: ModelFacts, repo_id: str, prompt_text: str, dataset_ids: list[str] | None = None
) -> str:
    return render(
        "model_card.md",
        front_matter=model_front_matter(facts, dataset_ids or [], repo_id),
        **summary_values(facts, repo_id),
        **training_values(facts),
        **eval_values(facts.eval),
        **usage_values(facts, prompt_text),
        **limits_values(facts),
    )


def checkpoint_card(facts: ModelFacts, repo_id: str, name: str, step: int | None, loss: float | None) -> str:
    total = (facts.manifest.get("counts") or {}).get("global_step")
    return (
        f"{model_front_matter(facts, [])}\n# {repo_id.split('/')[-1]} @ {name}\n\nAn intermediate checkpoint "
        f"of `{repo_id}`: training step {num(step)} of {num(total)}, training loss {num(loss)}. Load it with "
        f'`revision="{name}"`. How the model was made and how it scores: the card on `main`.\n'
    )
