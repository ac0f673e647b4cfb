"""The filter stage: each step on literal cases, then whole runs over real files with every sample accounted for."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.filter.config import FilterConfig
from pipeline.filter.dedup import Decontaminate, Dedup
from pipeline.filter.selection import Select
from pipeline.filter.stage import run
from pipeline.filter.steps import Context, Format, Item, Language, Length, Repetition, repeated_ngram_ratio
from pipeline.records.logprobs import TopK, write_sidecar
from pipeline.records.manifest import read_manifest, write_manifest
from pipeline.records.schema import RecordError, Sample
from tests.conftest import SHARED_DATA, distill_main

BENCH = SHARED_DATA / "benchmarks"


def sample(
    pid: str,
    i: int,
    completion: str,
    answer: str | None = "5",
    problem: str = "What is 2+3?",
    finish: str = "stop",
    source: str = "toy",
) -> Sample:
    return Sample(
        id=f"{pid}/{i}",
        problem_id=pid,
        sample_index=i,
        problem=problem,
        answer=answer,
        prompt=[{"role": "user", "content": problem}],
        completion=completion,
        finish_reason=finish,
        num_prompt_tokens=10,
        num_completion_tokens=len(completion.split()),
        teacher="t",
        sampling={},
        source=source,
    )


def item(completion: str, problem: str = "What is 2+3?") -> Item:
    return Item.from_sample(sample("p", 0, completion, problem=problem))


GOOD = "<think>\nI add 2 and 3 to get 5.\n</think>\n\nThe answer is \\boxed{5}."
LOOP = "<think>\n" + "Let me check the sum again and again. " * 40 + "\n</think>\n\n\\boxed{5}"


@pytest.mark.parametrize(
    ("completion", "problem", "reason"),
    [
        (GOOD, "What is 2+3?", None),
        (
            "<think>\n我们先把二和三相加得到五，然后再检查一遍结果是否正确。\n</think>\n\n\\boxed{5}",
            "What is 2+3?",
            "language_mixing",
        ),
        (
            "<think>\n我们先把二和三相加得到五，然后再检查一遍结果是否正确。\n</think>\n\n\\boxed{5}",
            "二加三等于几？",
            None,
        ),
        (
            "<think>\nFirst $\\frac{a}{b} + \\sqrt{x}$ then 二 and three plus some more words here.\n</think>\n\n5",
            "What is 2+3?",
            None,
        ),  # LaTeX is notation; one stray character is under 5%
        (
            "<think>\nРешим: два плюс три будет пять, проверим ещё раз внимательно.\n</think>\n\n5",
            "What is 2+3?",
            "language_mixing",
        ),
    ],
)
def test_language_mixing(completion, problem, reason):
    drop = Language(Language.Options()).check(item(completion, problem))
    assert (drop.reason if drop else None) == reason


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        (GOOD, None),
        ("<think>\n" + "word " * 800 + "\n</think>\n\n5", "long_paragraph"),
        ("<think>\n" + ("word " * 100 + "\n\n") * 8 + "\n</think>\n\n5", None),  # long but in paragraphs
        ("<think>\nLet me compute:\n```python\nprint(2+3)\n```\n</think>\n\n5", "code_block_in_reasoning"),
    ],
)
def test_format_rules(completion, reason):
    drop = Format(Format.Options()).check(item(completion))
    assert (drop.reason if drop else None) == reason


def test_repetition_catches_loops_not_ordinary_reasoning():
    assert repeated_ngram_ratio(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"], 3) == 0.0
    assert repeated_ngram_ratio(("x y z " * 10).split(), 3) == 1.0
    step = Repetition(Repetition.Options())
    assert step.check(item(LOOP)).reason == "repetitive"
    varied = "<think>\n" + " ".join(
        f"step {i}: add {i} to the total, giving {i * (i + 1) // 2}." for i in range(60)
    )
    assert step.check(item(varied + "\n</think>\n\n5")) is None


def test_length_bounds_on_reasoning_and_answer():
    it = item(GOOD)
    it.reasoning_tokens, it.answer_tokens = 50, 3
    assert Length(Length.Options(max_reasoning_tokens=40)).check(it).reason == "reasoning_too_long"
    assert Length(Length.Options(min_answer_tokens=5)).check(it).reason == "answer_too_short"
    assert Length(Length.Options(max_reasoning_tokens=50, max_answer_tokens=3)).check(it) is None


def test_dedup_exact_and_near_duplicates_keep_the_first():
    base = "<think>\n" + " ".join(f"consider case {i} and its consequence {i * 3}" for i in range(40))
    near = base.replace("case 7 ", "case seven ")
    items = [
        item(base + "\n</think>\n\n5"),
        item(base.upper() + "\n</think>\n\n5"),
        item(near + "\n</think>\n\n5"),
        item(GOOD),
    ]
    for i, it in enumerate(items):
        it.sample.id = f"p/{i}"
    drops = Dedup(Dedup.Options()).run(items, Context())
    assert {i: d.reason for i, d in drops.items()} == {1: "exact_duplicate", 2: "near_duplicate"}
    assert drops[1].detail == "of p/0"
    assert Dedup(Dedup.Options(method="exact")).run(items, Context()).keys() == {1}


def test_decontamination_names_the_benchmark_and_the_ngram():
    planted = json.loads((BENCH / "math500.jsonl").read_text().splitlines()[7])["problem"]
    items = [item(GOOD, problem="Reformulated: " + planted), item(GOOD)]
    items[1].sample.problem_id = "clean"
    step = Decontaminate(Decontaminate.Options(benchmarks=["math500", "gsm8k"], data_dir=str(BENCH)))
    drops = step.run(items, Context())
    assert list(drops) == [0]
    assert drops[0].reason == "contaminated" and drops[0].detail.startswith("math500 (math500/")
    from pipeline.records.benchmarks import words

    assert drops[0].detail.split("'")[1] in " ".join(words(planted))  # the matching 8-gram, quoted


def test_select_applies_the_pass_rate_window_and_keeps_the_shortest():
    items = [item(GOOD + " " * i) for i in range(4)] + [item(GOOD)]
    for i, it in enumerate(items):
        it.sample.problem_id = "easy" if i < 4 else "hard"
        it.sample.id = f"{it.sample.problem_id}/{i}"
        it.index = i
    context = Context(verdicts={"easy": Counter(correct=4), "hard": Counter(correct=1, wrong=7)})
    step = Select(Select.Options(min_pass_rate=0.2, per_problem=2))
    step.observe(items[:3], context)  # first pass: the samples' keys, a batch at a time
    step.observe(items[3:], context)
    step.decide(context)
    drops = step.run(items[:2], context) | {2 + j: d for j, d in step.run(items[2:], context).items()}
    assert {i: d.reason for i, d in drops.items()} == {
        2: "not_selected",
        3: "not_selected",
        4: "pass_rate_too_low",
    }
    assert drops[4].detail == "1/8 correct"


def write_samples(path: Path, samples: list[Sample]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(_asdict(s)) + "\n" for s in samples))
    return path


def _asdict(s: Sample) -> dict:
    import dataclasses

    return dataclasses.asdict(s)


MIXED = [
    ("ok", GOOD, "stop", "keep"),
    ("wrong", "<think>\nI add them: 6.\n</think>\n\nThe answer is \\boxed{6}.", "stop", "math/wrong"),
    ("cut", "<think>\nI add 2 and 3 to get", "length", "parse/unterminated_think"),
    ("long", "<think>\nI add 2 and 3 to get 5.\n</think>\n\n\\boxed{5}", "length", "finished/truncated"),
    ("noans", "<think>\nI add 2 and 3 to get 5.\n</think>\n\nI am not sure.", "stop", "math/no_answer"),
    ("loop", LOOP, "stop", "repetition/repetitive"),
    (
        "mixed",
        "<think>\n我们先把二和三相加得到五，然后再检查一遍结果是否正确。\n</think>\n\n\\boxed{5}",
        "stop",
        "language/language_mixing",
    ),
    ("dup", GOOD, "stop", "dedup/exact_duplicate"),
]


def test_whole_stage_accounts_for_every_sample_once(tmp_path):
    samples = [sample(f"p{i}", 0, text, finish=finish) for i, (_, text, finish, _) in enumerate(MIXED)]
    samples.append(sample("nogold", 0, GOOD, answer=None))
    planted = json.loads((BENCH / "math500.jsonl").read_text().splitlines()[3])
    samples.append(
        sample(
            "leak",
            0,
            f"<think>\nwork\n</think>\n\n\\boxed{{{planted['answer']}}}",
            answer=planted["answer"],
            problem=planted["problem"],
        )
    )
    src = write_samples(tmp_path / "in" / "samples-00000.jsonl", samples)
    ids = [s.id for s in samples]
    topk = [
        TopK(
            np.arange(s.num_completion_tokens, dtype=np.int32),
            np.zeros(s.num_completion_tokens, np.float16),
            np.tile(np.arange(3, dtype=np.int32), (s.num_completion_tokens, 1)),
            np.full((s.num_completion_tokens, 3), -1.0, np.float16),
        )
        for s in samples
    ]
    write_sidecar(src.parent / "logprobs-00000.safetensors", ids, topk)
    write_manifest(src.parent, "generate", {}, [], {})  # a complete generate output
    recipe = tmp_path / "f.yaml"
    recipe.write_text(
        f"stage: filter\ninput: {src.parent}\noutput: {tmp_path / 'out'}\ntokenizer: null\nsteps:\n"
        "  - name: parse\n  - name: finished\n  - name: math\n  - name: language\n  - name: repetition\n"
        f"  - name: dedup\n  - name: decontaminate\n    benchmarks: [math500]\n    data_dir: {BENCH}\n"
    )
    result = distill_main("filter", "--config", str(recipe), "tokenizer=" + str(_tokenizer_dir(tmp_path)))
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    table = pq.read_table(next((out / "data").glob("*.parquet"))).to_pylist()
    kept_ids = [r["id"] for r in table]
    assert sorted(kept_ids + [r["id"] for r in rejected]) == sorted(ids)  # each exactly once
    fates = {r["id"]: f"{r['step']}/{r['reason']}" for r in rejected} | {i: "keep" for i in kept_ids}
    for i, (_, _, _, expected) in enumerate(MIXED):
        assert fates[f"p{i}/0"] == expected, i
    assert fates["nogold/0"] == "math/cannot_tell_no_gold"
    assert fates["leak/0"] == "decontaminate/contaminated"
    assert "math500" in next(r["detail"] for r in rejected if r["id"] == "leak/0")
    row = table[0]
    assert row["prompt"] == [{"role": "user", "content": "What is 2+3?"}]
    assert row["completion"] == [{"role": "assistant", "content": GOOD}]
    n = row["num_completion_tokens"]
    assert row["teacher_token_ids"] == list(range(n)) and len(row["teacher_topk_ids"]) == n
    report = json.loads((out / "report.json").read_text())
    assert report["input"] == len(samples) and report["kept"] == 1
    assert sum(s["dropped"] for s in report["steps"]) == len(samples) - 1
    assert report["verdicts"] == {"correct": 5, "wrong": 2, "cannot_tell": 1}  # graded before later steps
    assert (out / "report.png").stat().st_size > 10_000 and read_manifest(out)["counts"]["kept"] == 1
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert ds[0]["completion"][0]["role"] == "assistant"


def _tokenizer_dir(tmp_path: Path) -> Path:
    from transformers import PreTrainedTokenizerFast

    from pipeline.tiny_model import train_tokenizer

    tok = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer("some text 123", 300), eos_token="<|im_end|>"
    )
    tok.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


def test_filter_agrees_with_real_graded_answers(tmp_path):
    """800 real Qwen2.5-Math answers as samples: the math step keeps exactly the ones graded correct."""
    rows = [
        json.loads(line)
        for line in (SHARED_DATA / "grading" / "qwen25math_graded_math_100x8.jsonl").read_text().splitlines()
    ]
    samples, labels = [], {}
    for r in rows:
        for j, (code, score) in enumerate(zip(r["code"], r["score"], strict=True)):
            s = sample(f"q{r['idx']}", j, code, answer=r["answer"], problem=r["question"])
            samples.append(s)
            labels[s.id] = score
    src = write_samples(tmp_path / "in.jsonl", samples)
    cfg = load_config(
        FilterConfig,
        None,
        [
            f"input={src}",
            f"output={tmp_path / 'out'}",
            f"tokenizer={_tokenizer_dir(tmp_path)}",
            "steps=[{name: parse, allow_missing_think: true}, {name: math}]",
        ],
    )
    assert run(cfg) == 0
    kept = {r["id"] for r in pq.read_table(tmp_path / "out" / "data").to_pylist()}
    agree = sum((sid in kept) == label for sid, label in labels.items())
    assert agree / len(labels) >= 0.995


def test_bad_input_names_file_line_and_publishes_nothing(tmp_path):
    src = tmp_path / "s.jsonl"
    good = json.dumps(_asdict(sample("a", 0, GOOD)))
    bad = json.loads(good)
    del bad["completion"]
    src.write_text(good + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(RecordError, match=r"s.jsonl:2: field 'completion' is missing"):
        run(load_config(FilterConfig, None, [f"input={src}", f"output={tmp_path / 'out'}"]))
    assert not (tmp_path / "out").exists()
    recipe = tmp_path / "f.yaml"
    recipe.write_text(f"stage: filter\ninput: {src}\nsteps:\n  - name: math\n    timout: 3\n")
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'steps\[0\].timout' in .*f.yaml:5; did you mean "
        r"'steps\[0\].timeout'\?",
    ):
        from pipeline.cli import load_stage_config

        load_stage_config("filter", str(recipe), [])
    recipe.write_text(f"stage: filter\ninput: {src}\nsteps:\n  - name: maths\n")
    result = distill_main("validate", "--config", str(recipe))
    assert result.returncode == 2 and "f.yaml:4: 'steps[0].name' must be one of parse" in result.stderr


def test_samples_that_failed_before_grading_count_against_their_problems_pass_rate(tmp_path):
    """1 correct + 3 cut off by the token budget is a 1/4 pass rate, not 1/1."""
    samples = [sample("p", 0, GOOD)] + [
        sample("p", i, "<think>\nI add 2 and", finish="length") for i in (1, 2, 3)
    ]
    samples += [sample("q", 0, GOOD), sample("q", 1, GOOD + " ")]
    src = write_samples(tmp_path / "in.jsonl", samples)
    steps = "steps=[{name: parse}, {name: finished}, {name: math}, {name: select, min_pass_rate: 0.5}]"
    cfg = load_config(
        FilterConfig, None, [f"input={src}", f"output={tmp_path / 'out'}", "count_tokens=false", steps]
    )
    assert run(cfg) == 0
    rejected = {
        r["id"]: r for r in map(json.loads, (tmp_path / "out" / "rejected.jsonl").read_text().splitlines())
    }
    assert rejected["p/0"]["reason"] == "pass_rate_too_low" and rejected["p/0"]["detail"] == "1/4 correct"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["pass_rate"]["per_problem"] == {"p": 0.25, "q": 1.0}


@pytest.mark.parametrize("window", ["min_pass_rate: 0.2", "max_pass_rate: 0.9"])
def test_a_pass_rate_window_without_grading_before_it_is_refused_at_validation(tmp_path, window):
    recipe = tmp_path / "f.yaml"
    recipe.write_text(
        f"stage: filter\ninput: x\nsteps:\n  - name: parse\n  - name: select\n    {window}\n  - name: math\n"
    )
    result = distill_main("validate", "--config", str(recipe))
    assert result.returncode == 2
    assert (
        "f.yaml:5: field 'steps[1]': select's min_pass_rate / max_pass_rate need a grading step"
        in result.stderr
    )
    recipe.write_text("stage: filter\ninput: x\nsteps:\n  - name: select\n    per_problem: 1\n")
    assert distill_main("validate", "--config", str(recipe)).returncode == 0  # no window: nothing to grade


def generate_folder(tmp_path: Path, shards: int = 2, per_shard: int = 3) -> tuple[Path, Path, Any]:
    """A complete generate output: shards of samples by a teacher whose tokenizer is real, with true sidecars."""
    from transformers import AutoTokenizer

    teacher = _tokenizer_dir(tmp_path)
    tok = AutoTokenizer.from_pretrained(teacher)
    folder = tmp_path / "gen"
    for s in range(shards):
        batch = [sample(f"p{s}-{i}", 0, f"<think>\nsome text {i}\n</think>\n\n123") for i in range(per_shard)]
        topk = []
        for item in batch:
            ids = tok.encode(item.completion, add_special_tokens=False) + [tok.eos_token_id]
            item.teacher, item.num_completion_tokens = str(teacher), len(ids)
            n = len(ids)
            topk.append(TopK(np.asarray(ids, np.int32), np.zeros(n, np.float16),
                             np.tile(np.arange(3, dtype=np.int32), (n, 1)), np.full((n, 3), -1.0, np.float16)))  # fmt: skip
        write_samples(folder / f"samples-{s:05d}.jsonl", batch)
        write_sidecar(folder / f"logprobs-{s:05d}.safetensors", [b.id for b in batch], topk)
    write_manifest(folder, "generate", {}, [], {})
    return folder, teacher, tok


def _rewrite_sidecar(folder: Path, shard: int, change) -> None:
    from pipeline.records.logprobs import SidecarFile

    path = folder / f"logprobs-{shard:05d}.safetensors"
    side = SidecarFile(path)
    entries = [side.get(i) for i in side.ids]
    ids = list(side.ids)
    change(ids, entries)
    del side
    write_sidecar(path, ids, entries)


def _drop_last_token(ids, entries):
    e = entries[1]
    entries[1] = TopK(e.token_ids[:-1], e.token_logprobs[:-1], e.topk_ids[:-1], e.topk_logprobs[:-1])


def _change_a_token(ids, entries):
    entries[2].token_ids = entries[2].token_ids.copy()
    entries[2].token_ids[1] += 1


SIDECAR_DAMAGE = {
    "truncated file": (
        lambda f: (f / "logprobs-00001.safetensors").write_bytes((f / "logprobs-00001.safetensors").read_bytes()[:300]),
        r"gen/logprobs-00001.safetensors: not a readable logprob sidecar",
    ),
    "swapped": (
        lambda f: [os.rename(f / a, f / b) for a, b in (("logprobs-00000.safetensors", "x"),
                   ("logprobs-00001.safetensors", "logprobs-00000.safetensors"), ("x", "logprobs-00001.safetensors"))],
        r"gen/logprobs-00000.safetensors: holds logprobs of sample 'p1-0/0', which is not in samples-00000.jsonl",
    ),
    "deleted": (
        lambda f: (f / "logprobs-00000.safetensors").unlink(),
        r"gen/samples-00000.jsonl: no logprob sidecar logprobs-00000.safetensors, while 1 other shards have one",
    ),
    "one token short": (
        lambda f: _rewrite_sidecar(f, 1, _drop_last_token),
        r"gen/samples-00001.jsonl:2: sample 'p1-1/0': logprobs-00001.safetensors holds \d+ tokens, the sample has "
        r"num_completion_tokens \d+",
    ),
    "other tokens": (
        lambda f: _rewrite_sidecar(f, 0, _change_a_token),
        r"gen/samples-00000.jsonl:3: sample 'p0-2/0': token 1 of logprobs-00000.safetensors is \d+, the completion's "
        r"token is \d+",
    ),
}  # fmt: skip


@pytest.mark.parametrize("damage", list(SIDECAR_DAMAGE))
def test_a_damaged_sidecar_fails_the_filter_naming_shard_sample_and_token(tmp_path, damage):
    folder, _, _ = generate_folder(tmp_path)
    steps = "steps=[{name: parse}]"
    cfg = load_config(FilterConfig, None, [f"input={folder}", f"output={tmp_path / 'out'}", steps])
    assert run(cfg) == 0  # intact: passes, and kd gets every row's logprobs
    table = pq.read_table(tmp_path / "out" / "data").to_pylist()
    assert all(r["teacher_token_ids"] for r in table) and len(table) == 6
    make, message = SIDECAR_DAMAGE[damage]
    make(folder)
    recipe = tmp_path / "f.yaml"
    recipe.write_text(
        f"stage: filter\ninput: {folder}\noutput: {tmp_path / 'out2'}\nsteps:\n  - name: parse\n"
    )
    result = distill_main("filter", "--config", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    import re

    assert re.search("error: .*" + message, result.stderr), result.stderr[-2000:]
    assert not (tmp_path / "out2").exists()


def test_filter_refuses_a_generate_folder_without_its_manifest(tmp_path):
    folder, _, _ = generate_folder(tmp_path)
    (folder / "manifest.json").unlink()  # generate was killed: the folder holds part of its samples
    recipe = tmp_path / "f.yaml"
    recipe.write_text(
        f"stage: filter\ninput: {folder}\noutput: {tmp_path / 'out'}\nsteps:\n  - name: parse\n"
    )
    result = distill_main("filter", "--config", str(recipe))
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr.startswith(f"error: {folder}: field 'input': no manifest.json: the generate run")
    assert "rerun `distill generate`" in result.stderr
    allowed = distill_main("filter", "--config", str(recipe), "--allow-incomplete")
    assert allowed.returncode == 0, allowed.stderr[-2000:]


@pytest.mark.parametrize("target", ["generate", "user", "other-generate"])
def test_filter_never_replaces_a_folder_that_is_not_a_filter_output(tmp_path, target):
    """One typo in `output=` (the input folder, a user's data, another run) must not delete GPU-hours of samples."""
    folder, _, _ = generate_folder(tmp_path)
    out = {"generate": folder, "user": tmp_path / "mine", "other-generate": tmp_path / "older"}[target]
    if target == "user":
        out.mkdir()
        (out / "notes.txt").write_text("my notes")
    elif target == "other-generate":
        import shutil

        shutil.copytree(folder, out)
        (out / "manifest.json").unlink()  # a generate run still going: samples, no manifest
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    recipe = tmp_path / "f.yaml"
    recipe.write_text(f"stage: filter\ninput: {folder}\noutput: {out}\nsteps:\n  - name: parse\n")
    result = distill_main("filter", "--config", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {out}: field 'output': {out} holds "), result.stderr
    expected = {"generate": "a finished generate output", "user": "1 entries no distill filter run wrote (notes.txt)",
                "other-generate": "no distill filter run wrote"}[target]  # fmt: skip
    assert expected in result.stderr
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_filter_replaces_its_own_output_and_fills_an_empty_folder(tmp_path):
    folder, _, _ = generate_folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    recipe = tmp_path / "f.yaml"
    recipe.write_text(f"stage: filter\ninput: {folder}\noutput: {out}\nsteps:\n  - name: parse\n")
    for _ in range(2):  # empty, then its own finished output
        result = distill_main("filter", "--config", str(recipe))
        assert result.returncode == 0, result.stderr[-2000:]
        assert read_manifest(out)["stage"] == "filter"


@pytest.mark.parametrize(
    ("read", "kept", "rejected", "dropped"), [(10, 6, 3, 4), (10, 6, 4, 3), (10, 7, 4, 4)]
)
def test_the_filters_accounting_refuses_to_publish_a_lost_or_doubled_sample(read, kept, rejected, dropped):
    from pipeline.filter.stage import check_accounted

    check_accounted(10, 6, 4, 4)  # every sample once: fine
    with pytest.raises(RuntimeError, match="lost track of samples"):
        check_accounted(read, kept, rejected, dropped)
