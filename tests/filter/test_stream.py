"""The filter in bounded memory: batch by batch, it outputs what a plain in-memory filter does, and its memory
does not grow with the input."""

from __future__ import annotations

import json
import logging
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from bench.r1_like import write_samples as write_r1_like
from pipeline.config import load_config
from pipeline.filter.config import FilterConfig
from pipeline.filter.stage import run
from pipeline.records.read import read_samples
from pipeline.records.schema import RecordError, Sample
from pipeline.toy.task import make_problems, solution_of
from tests.conftest import SHARED_DATA
from tests.filter.reference import completion_stats, pass_rates, reference
from tests.filter.test_filter import GOOD, LOOP, sample, write_samples

BENCH = SHARED_DATA / "benchmarks"
DEMO_STEPS = (
    "[{name: parse}, {name: finished}, {name: math}, {name: language}, {name: repetition}, "
    "{name: dedup, field: completion, method: exact}, {name: select, per_problem: 2}]"
)  # recipes/demo/filter.yaml's


def demo_samples() -> list[Sample]:
    """The demo's shape: toy arithmetic, 3 samples a problem, mostly the same worked solution (exact
    duplicates), some wrong answers, some cut off, a few with an extra line (distinct, so select has a choice)."""
    out = []
    for p, problem in enumerate(make_problems(seed=3, count=90, split="train")):
        right = solution_of(problem)
        for k in range(3):
            text, finish = right, "stop"
            if (p + k) % 7 == 3:
                text = right.replace(f"{{{problem.answer}}}", f"{{{int(problem.answer) + 1}}}")
            elif (p * 3 + k) % 11 == 5:
                text, finish = right[: len(right) // 2], "length"
            elif k >= 1 and p % 3 == 0:
                text = right.replace("\n</think>", f"\ncheck {k}: {problem.answer}\n</think>")
            s = sample(problem.id, k, text, answer=problem.answer, problem=problem.problem, finish=finish)
            s.source = problem.source
            out.append(s)
    return out


HUMANEVAL_TESTS = {
    "kind": "humaneval",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}


def code(body: str) -> str:
    return f"<think>\nI write add.\n</think>\n\n```python\ndef add(a, b):\n    return {body}\n```"


def long_trace(seed: int, swap: str | None = None) -> str:
    words = " ".join(f"consider case {i} then step {i * seed % 17} gives {i + seed}" for i in range(60))
    if swap:
        words = words.replace("case 7 ", swap)
    return f"<think>\n{words}\n</think>\n\nThe answer is \\boxed{{5}}."


def mixed_samples() -> list[Sample]:
    """Math and code, right and wrong, malformed, cut off, looping, exact and near duplicates, a benchmark's
    problem, and problems whose pass rates fall below, inside and above a window."""
    wrong = "<think>\nI add them: 6.\n</think>\n\nThe answer is \\boxed{6}."
    planted = [json.loads(line) for line in (BENCH / "math500.jsonl").read_text().splitlines()[:3]]
    out = []
    for p in range(12):  # pass rates 0, 1/4, 1/2, 3/4, 1 by problem
        for k in range(4):
            text = GOOD if k < p % 5 else wrong
            if k == 3 and p % 4 == 1:
                text = long_trace(p)
            out.append(sample(f"m{p}", k, text.replace("2 and 3", f"2 and 3 ({p}.{k})"), source=f"s{p % 3}"))
    out += [sample("dup", 0, GOOD), sample("dup", 1, GOOD), sample("dup", 2, GOOD.upper())]
    out += [sample("near", 0, long_trace(3)), sample("near", 1, long_trace(3, "case seven ")),
            sample("near", 2, long_trace(3, "case 7x ")), sample("near", 3, long_trace(4))]  # fmt: skip
    out += [sample("bad", 0, "<think>\nI add 2 and 3 to get"), sample("bad", 1, GOOD, finish="length"),
            sample("bad", 2, LOOP), sample("bad", 3, GOOD + "\n</think>"), sample("nogold", 0, GOOD, answer=None)]  # fmt: skip
    for i, row in enumerate(planted):
        text = f"<think>\nwork\n</think>\n\n\\boxed{{{row['answer']}}}"
        out.append(sample(f"leak{i}", 0, text, answer=row["answer"], problem="Restated: " + row["problem"]))
    for k, body in enumerate(["a + b", "a - b", "a + b  # again", "b + a"]):
        s = sample("code-add", k, code(body), answer=None, problem="Write add(a, b).", source="code")
        s.tests = HUMANEVAL_TESTS
        out.append(s)
    return out


MIXED_STEPS = (
    "[{name: parse}, {name: finished}, {name: math, cannot_tell: keep}, {name: code, cannot_tell: keep}, {name: language}, "
    "{name: repetition}, {name: dedup, method: both, field: completion}, "
    f"{{name: decontaminate, benchmarks: [math500], data_dir: {BENCH}}}, "
    "{name: select, min_pass_rate: 0.3, max_pass_rate: 0.9, per_problem: 2, rule: %s}]"
)


def filtered(tmp_path: Path, samples: list[Sample], steps: str, batch_size: int, name: str) -> dict[str, Any]:
    src = write_samples(tmp_path / name / "in" / "samples-00000.jsonl", samples)
    out = tmp_path / name / "out"
    overrides = [f"input={src}", f"output={out}", f"steps={steps}", "count_tokens=false", "workers=2"]
    assert run(load_config(FilterConfig, None, [*overrides, f"batch_size={batch_size}"])) == 0
    table = pq.read_table(sorted((out / "data").glob("*.parquet"))[0]).to_pylist()
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    return {"rows": table, "rejected": rejected, "report": json.loads((out / "report.json").read_text())}


def assert_same_as_reference(got: dict[str, Any], samples: list[Sample], steps: str) -> None:
    cfg = load_config(FilterConfig, None, ["input=x", f"steps={steps}"])
    want = reference(samples, cfg.build_steps())
    by_id = {s.id: s for s in samples}
    assert [r["id"] for r in got["rows"]] == want.kept
    assert [(r["id"], r["step"], r["reason"], r["detail"]) for r in got["rejected"]] == want.rejected
    assert all(r["completion"] == by_id[r["id"]].completion for r in got["rejected"])
    assert [r["completion"][0]["content"] for r in got["rows"]] == [by_id[i].completion for i in want.kept]
    report = got["report"]
    assert [{k: v for k, v in s.items() if k != "seconds"} for s in report["steps"]] == want.steps
    fates = Counter(f"{step}/{reason}" for _, step, reason, _ in want.rejected)
    assert report["rejected_by_reason"] == dict(fates)
    assert (report["input"], report["kept"]) == (len(samples), len(want.kept))
    assert report["verdicts"] == dict(sum(want.verdicts.values(), Counter()))
    assert report["pass_rate"].get("per_problem", {}) == pass_rates(want)
    kept = [by_id[i] for i in want.kept]
    dropped = [by_id[i] for i, *_ in want.rejected]
    assert report["tokens"]["kept"]["completion"] == completion_stats(kept)
    assert report["tokens"]["dropped"]["completion"] == completion_stats(dropped)
    assert report["sources"] == dict(Counter(s.source or "unknown" for s in kept))


@pytest.mark.parametrize("batch_size", [1000, 7])
def test_demo_shaped_samples_come_out_as_the_in_memory_filter_says(tmp_path, batch_size):
    samples = demo_samples()
    got = filtered(tmp_path, samples, DEMO_STEPS, batch_size, "demo")
    assert_same_as_reference(got, samples, DEMO_STEPS)
    reasons = got["report"]["rejected_by_reason"]
    assert {"math/wrong", "dedup/exact_duplicate", "select/not_selected"} <= set(reasons)  # all exercised


@pytest.mark.parametrize(("batch_size", "rule"), [(1000, "shortest"), (5, "shortest"), (3, "random")])
def test_mixed_samples_come_out_as_the_in_memory_filter_says(tmp_path, batch_size, rule):
    samples = mixed_samples()
    got = filtered(tmp_path, samples, MIXED_STEPS % rule, batch_size, "mixed")
    assert_same_as_reference(got, samples, MIXED_STEPS % rule)
    reasons = got["report"]["rejected_by_reason"]
    for reason in ("code/failed", "dedup/exact_duplicate", "dedup/near_duplicate", "decontaminate/contaminated",
                   "select/pass_rate_too_low", "select/pass_rate_too_high", "select/not_selected"):  # fmt: skip
        assert reason in reasons, reason
    near = next(r for r in got["rejected"] if r["id"] == "near/2")
    assert near["detail"] == "of near/0"  # near/1 collides too, but was dropped: not in the index


def test_a_sample_id_seen_twice_in_different_batches_is_an_error_naming_both_places(tmp_path):
    samples = [sample(f"p{i}", 0, GOOD) for i in range(5)] + [sample("p1", 0, GOOD)]
    src = write_samples(tmp_path / "in" / "samples-00000.jsonl", samples)
    cfg = load_config(FilterConfig, None, [f"input={src}", f"output={tmp_path / 'out'}", "count_tokens=false",
                                           "batch_size=2", "steps=[{name: parse}]"])  # fmt: skip
    with pytest.raises(RecordError, match=r"samples-00000.jsonl:6: field 'id': sample id 'p1/0' appears twice "
                                          r"\(first at .*samples-00000.jsonl:2\)"):  # fmt: skip
        run(cfg)
    assert not (tmp_path / "out").exists()


def peak_python_memory(tmp_path: Path, n: int) -> int:
    """Peak bytes the Python heap holds while the filter runs over n R1-like samples of a fixed 40 problems."""
    src = write_r1_like(tmp_path / f"in-{n}" / "samples-00000.jsonl", n, problems=40, chars=1000)
    steps = (
        "[{name: parse}, {name: finished}, {name: repetition}, {name: dedup, method: both}, "
        "{name: select, per_problem: 2}]"
    )  # no grading: its worker processes, forked under tracemalloc, would trace every allocation (minutes)
    cfg = load_config(FilterConfig, None, [f"input={src}", f"output={tmp_path / f'out-{n}'}", f"steps={steps}",
                                           "count_tokens=false", "batch_size=20", "workers=1"])  # fmt: skip
    tracemalloc.start()
    try:
        assert run(cfg) == 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_input(tmp_path):
    """4x the samples, same batch: the Python heap's peak grows by less than 200 bytes an added sample (their
    keys; measured ~50), where holding every completion would take ~1 KB each (every reasoning, 1 KB more)."""
    peak_python_memory(tmp_path, 40)  # imports (math-verify, matplotlib...) before anything is measured
    small, large = peak_python_memory(tmp_path, 150), peak_python_memory(tmp_path, 600)
    assert sum(1 for _ in read_samples(tmp_path / "in-600")) == 600
    assert large - small < 200 * 450, (small, large)


def test_progress_is_logged_as_whole_lines_with_rate_and_eta(tmp_path, caplog):
    from pipeline.filter.progress import Progress

    log = logging.getLogger("distill.filter")
    progress = Progress("pass 1/2", 1000, log, every=0.0)
    with caplog.at_level(logging.INFO, logger="distill.filter"):
        progress.advance(250)
        progress.done()
    first, last = caplog.messages
    assert first.startswith("pass 1/2: 250/1,000 samples (25%), ") and "/s, ETA " in first
    assert "\r" not in first + last and last.startswith("pass 1/2: 250 samples in ")
