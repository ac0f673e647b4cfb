"""The GPU recipes (students, teachers, filter, eval) held against the facts of the models they name
(tests/model_facts.py), with no GPU and no download: lengths within each model's context, kd / opd teachers that
share their student's tokenizer, one think tag a prompt, every path a recipe reads written by some recipe or a
command its header documents, and every `make` / `sbatch` command in a header selecting that very recipe."""

from __future__ import annotations

import re
import shlex
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml

from pipeline.prompts import THINK_PREFIX, think_overlap
from tests.conftest import REPO
from tests.model_facts import FACTS, TOKENS, ModelFacts

GPU_FOLDERS = ("students", "teachers", "filter", "eval")
RECIPES = sorted(
    p.relative_to(REPO).as_posix() for f in GPU_FOLDERS for p in (REPO / "recipes" / f).rglob("*.yaml")
)
GPUS_PER_NODE = 8


@cache
def load(recipe: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / recipe).read_text())


def header(recipe: str) -> list[str]:
    lines = (REPO / recipe).read_text().splitlines()
    return [line for line in lines[: next(i for i, x in enumerate(lines) if not x.startswith("#"))]]


def of(stage: str) -> list[str]:
    return [r for r in RECIPES if load(r)["stage"] == stage]


def documented_commands() -> list[list[str]]:
    """`distill STAGE --config R key=value ...` commands written in recipe headers (other runs of a recipe)."""
    found = []
    for recipe in RECIPES:
        for line in header(recipe):
            m = re.search(
                r"distill (?:generate|filter|sft|kd|opd|eval) --config [\w./-]+\.yaml(?: [\w.]+=[^\s)]+)+",
                line,
            )
            if m:
                found.append(shlex.split(m.group(0)))
    return found


def writers() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every output path a recipe or a documented command writes -> (the recipe, its settings with overrides)."""
    out = {}
    for recipe in RECIPES:
        out[load(recipe)["output"]] = (recipe, load(recipe))
    for cmd in documented_commands():
        recipe, overrides = cmd[3], dict(a.split("=", 1) for a in cmd[4:])
        settings = {**load(recipe), **overrides}
        out[settings["output"]] = (recipe, settings)
    return out


def writer(path: str) -> tuple[str, dict[str, Any]]:
    found = writers()
    assert path in found, f"{path}: no recipe writes it and no recipe header documents a command that does"
    return found[path]


def student(recipe: str) -> tuple[str, ModelFacts, int]:
    """The facts of a training recipe's student (following `runs/...` to the recipe that wrote it), the model
    whose tokenizer it uses, and its context after the recipe's `model_config`."""
    settings = load(recipe)
    model, tokenizer = settings["model"], settings.get("tokenizer")
    context = (settings.get("model_config") or {}).get("max_position_embeddings")
    if model.startswith("runs/"):
        source, ancestor = writer(model)
        model, tokenizer = ancestor["model"], tokenizer or ancestor.get("tokenizer")
        context = context or (ancestor.get("model_config") or {}).get("max_position_embeddings")
    facts = FACTS[model]
    return model, FACTS[tokenizer or model], context or facts.context


def teacher_of_data(path: str) -> str:
    """The model that generated the samples behind a filter output (filter input -> generate recipe)."""
    _, filtered = writer(path)
    _, generated = writer(filtered["input"])
    return generated["model"]


def opd_teachers(settings: dict[str, Any]) -> list[str]:
    """The model of every opd teacher, a mixed source's members included; a self-distilled teacher without a
    path is the student's own copy (its tokenizer: the recipe's)."""
    specs = [
        t for v in (settings.get("teachers") or {}).values() for t in (v if isinstance(v, list) else [v])
    ]
    own = settings.get("tokenizer") or settings["model"]
    return [t.get("model") or (t["server"]["model"] if t.get("server") else own) for t in specs]


def tokenizer_model(model: str) -> str:
    """The table entry whose tokenizer a model uses: for a `runs/...` model, the tokenizer its recipe trained it
    with (a born-again teacher is an earlier run of the student's own recipe)."""
    if not model.startswith("runs/"):
        return model
    _, ancestor = writer(model)
    return ancestor.get("tokenizer") or ancestor["model"]


def teachers(recipe: str) -> list[str]:
    settings = load(recipe)
    if settings["stage"] == "opd":
        return opd_teachers(settings)
    kd = settings["kd"]
    fused = kd.get("teachers") or []
    if kd["teacher"] == "online":
        own = settings.get("tokenizer") or settings["model"]  # a frozen copy of the student
        return [tokenizer_model(m) for m in [t["model"] for t in fused] or [kd.get("teacher_model") or own]]
    scored = [writer(t["scores"])[1]["model"] for t in fused if t.get("scores")]
    return [teacher_of_data(d["path"]) for d in settings["data"]] + scored


def test_every_model_a_recipe_names_is_in_the_table():
    named = set()
    for recipe in RECIPES:
        s = load(recipe)
        named |= {s.get("model"), s.get("tokenizer"), (s.get("kd") or {}).get("teacher_model")}
        named |= {t.get("model") for t in (s.get("kd") or {}).get("teachers") or []}
        named |= set(opd_teachers(s)) if s["stage"] == "opd" else set()
    named = {m for m in named if m and not m.startswith("runs/")}
    assert named - set(FACTS) == set(), "add these models' facts (with their source) to tests/model_facts.py"


@pytest.mark.parametrize("recipe", of("generate"))
def test_a_teachers_engine_length_fits_its_context_and_its_budget(recipe):
    s = load(recipe)
    if s.get("backend") == "openai":
        pytest.skip("a served teacher's length is its server's")
    length = s["engine"]["max_model_len"]
    assert length <= FACTS[s["model"]].context and s["sampling"]["max_tokens"] < length


@pytest.mark.parametrize("recipe", of("sft") + of("kd") + of("opd"))
def test_a_students_training_length_fits_its_context(recipe):
    s, (_, _, context) = load(recipe), student(recipe)
    trainer = s["trainer"]
    length = trainer.get("max_length") or trainer["vllm_max_model_length"]
    assert length <= context


@pytest.mark.parametrize("recipe", of("eval"))
def test_eval_fits_every_students_context(recipe):
    """vLLM refuses a max_model_len above the model's context: the suites must run on every student we train."""
    smallest = min(student(r)[2] for r in of("sft"))
    assert load(recipe)["engine"]["max_model_len"] <= smallest == 32768


@pytest.mark.parametrize("recipe", of("kd") + of("opd"))
def test_kd_and_opd_teachers_share_their_students_tokenizer(recipe):
    model, tokenizer, _ = student(recipe)
    for teacher in teachers(recipe):
        t = FACTS[tokenizer_model(teacher)]
        assert t.tokenizer == tokenizer.tokenizer, (
            f"{recipe}: teacher {teacher} ({t.tokenizer}) and student {model} ({tokenizer.tokenizer}) tokenise "
            "differently: the stored / scored ids would not be the student's"
        )


@pytest.mark.parametrize("recipe", of("sft") + of("kd") + of("opd"))
def test_a_students_embedding_has_a_row_for_every_token_of_its_tokenizer(recipe):
    """A student given another family's tokenizer (Qwen2.5 with QwQ's think tokens) needs no resize only when
    the new ids fall in its padded rows."""
    model, tokenizer, _ = student(recipe)
    assert FACTS[model].vocab_rows >= TOKENS[tokenizer.tokenizer]


@pytest.mark.parametrize("recipe", of("generate"))
def test_a_forced_think_prefix_is_never_doubled(recipe):
    s = load(recipe)
    rendered = FACTS[s["model"]].generation_prompt
    if (s.get("prompt") or {}).get("think_prefix"):
        prompt = rendered[: len(rendered) - think_overlap(rendered, THINK_PREFIX)] + THINK_PREFIX
        assert prompt.count("<think>") == 1 and prompt.endswith(THINK_PREFIX)


def reads(recipe: str) -> list[str]:
    s = load(recipe)
    paths = [d["path"] for d in s.get("data") or [] if d.get("path")]
    paths += [s[k] for k in ("input", "samples") if s.get(k)]
    paths += [t["scores"] for t in (s.get("kd") or {}).get("teachers") or [] if t.get("scores")]
    paths += [s["model"]] if str(s.get("model", "")).startswith("runs/") else []
    paths += [s["problems"]["path"]] if (s.get("problems") or {}).get("path") else []
    return paths


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_path_a_recipe_reads_is_written_by_a_recipe_or_a_documented_command(recipe):
    for path in reads(recipe):
        assert (REPO / path).exists() or writer(path)


def make_commands() -> list[tuple[str, str]]:
    return [
        (recipe, line.split("# Command: ", 1)[1].split("  (=")[0].strip())
        for recipe in RECIPES
        for line in header(recipe)
        if line.startswith("# Command: make ")
    ]


@pytest.mark.parametrize(("recipe", "command"), make_commands(), ids=[r for r, _ in make_commands()])
def test_a_headers_make_command_runs_that_recipe(recipe, command):
    r = subprocess.run([*shlex.split(command), "-n"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    configs = re.findall(r"distill \w+ --config (\S+)", r.stdout)
    assert configs == [recipe], f"`{command}` runs {configs}, not {recipe}"


def nodes(recipe: str) -> int:
    hardware = next(line for line in header(recipe) if line.startswith("# Hardware: "))
    m = re.match(r"# Hardware: (\d+) nodes? of 8", hardware)
    return int(m.group(1)) if m else 1


@pytest.mark.parametrize("recipe", of("sft") + of("kd"))
def test_the_stated_batch_is_the_trainers_and_a_multi_node_recipe_launches_on_its_nodes(recipe):
    s, lines = load(recipe), header(recipe)
    stated = next(line for line in lines if line.startswith("# Tokens per step: "))
    m = re.match(
        r"# Tokens per step: (\d+) GPUs?(?:\(s\))? x (\d+) sequences? x (\d+) accumulation = (\d+)", stated
    )
    assert m, stated
    gpus, per_device, accumulation, total = map(int, m.groups())
    t = s["trainer"]
    assert (per_device, accumulation) == (t["per_device_train_batch_size"], t["gradient_accumulation_steps"])
    assert gpus * per_device * accumulation == total
    command = next(line for line in lines if line.startswith("# Command: "))
    if nodes(recipe) > 1:
        assert gpus == nodes(recipe) * GPUS_PER_NODE
        assert command.split("# Command: ")[1].split() == [
            "sbatch",
            f"--nodes={nodes(recipe)}",
            "recipes/slurm/sft-multinode.sbatch",
            s["stage"],
            recipe,
        ]
        assert (REPO / "recipes/slurm/sft-multinode.sbatch").is_file()
    else:
        assert "sbatch" not in command
