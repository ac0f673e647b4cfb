"""generate with `think_prefix: true` on a teacher whose chat template already opens the think block (QwQ-32B,
DeepSeek-R1 since 2025): one `<think>\\n`, not two, and the very samples of a template that opens nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from pipeline.generate.stage import run
from tests.conftest import teacher_recipe
from tests.helpers import PROBLEMS, worked_solution

pytestmark = pytest.mark.slow


def opening_teacher(teacher_dir: Path, folder: Path) -> Path:
    """A copy of the tiny teacher whose template ends the generation prompt with `<think>\\n`, as QwQ's does."""
    shutil.copytree(teacher_dir, folder)
    template = folder / "chat_template.jinja"
    generation = "{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    assert template.read_text().endswith(generation)
    template.write_text(
        template.read_text().replace(generation, "{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}")
    )
    return folder


def samples(out: str) -> list[dict]:
    return [
        json.loads(line)
        for p in sorted(Path(out).glob("samples-*.jsonl"))
        for line in p.read_text().splitlines()
    ]


def test_a_template_that_opens_think_gets_no_second_tag_and_the_same_samples(teacher_dir, tmp_path):
    teacher = opening_teacher(teacher_dir, tmp_path / "teacher")
    tok = AutoTokenizer.from_pretrained(teacher)
    assert tok.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
    ).endswith("assistant\n<think>\n")
    settings = {"backend": "transformers", "engine": "{}", "batch_size": 1, "prompt__think_prefix": "true"}
    opening = teacher_recipe(teacher, tmp_path / "opening", **settings)
    plain = teacher_recipe(teacher_dir, tmp_path / "plain", **settings)
    assert run(opening) == 0 and run(plain) == 0
    got, want = samples(opening.output), samples(plain.output)
    assert len(got) == len(PROBLEMS)
    for row, ref in zip(got, want, strict=True):
        a, b = map(int, row["problem_id"].split("-")[1:])
        assert row["completion"] == worked_solution(a, b) and not row["completion"].startswith(
            "<think>\n<think>"
        )
        same = ("id", "completion", "num_prompt_tokens", "num_completion_tokens", "finish_reason")
        assert {k: row[k] for k in same} == {k: ref[k] for k in same}


def test_a_prefix_of_each_problems_own_is_continued_and_kept_and_a_missing_one_is_named(
    teacher_dir, tmp_path
):
    """`prompt.prefix_field` (eval's forced-error recovery): each problem's own start of the answer is in the
    prompt and in `completion`, and the teacher continues it; a problem without it is one error naming the
    problems file, its line and the field."""
    from pipeline.errors import UserError

    settings = {"backend": "transformers", "engine": "{}", "batch_size": 4, "prompt__prefix_field": "start"}
    cfg = teacher_recipe(teacher_dir, tmp_path / "own", **settings)
    rows = [json.loads(line) for line in Path(cfg.problems.path).read_text().splitlines()]
    for row in rows:  # prefixes of different lengths in one batch
        a, b = map(int, row["id"].split("-")[1:])
        words = worked_solution(a, b).split(" ")  # cut between words: a prefix is text the model could write
        row["metadata"] = {"start": " ".join(words[: 2 + a % 3])}
    Path(cfg.problems.path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run(cfg) == 0
    got = samples(cfg.output)
    assert len(got) == len(PROBLEMS)
    for row in got:
        a, b = map(int, row["problem_id"].split("-")[1:])
        assert row["completion"] == worked_solution(a, b)  # the prefix, then the teacher's own continuation
    del rows[3]["metadata"]
    Path(cfg.problems.path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = teacher_recipe(teacher_dir, tmp_path / "missing", **settings)
    Path(again.problems.path).write_text(Path(cfg.problems.path).read_text())
    with pytest.raises(UserError, match=r"problems.jsonl:4: field 'metadata.start': missing"):
        run(again)
    assert not any(Path(again.output).glob("samples-*"))
    with pytest.raises(ValueError, match="prefix_field"):
        teacher_recipe(teacher_dir, tmp_path / "lp", **settings, logprobs=5)
