"""Problem/Sample records: readers with field mappings, atomic shards, manifests, file:line errors."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.records.manifest import read_manifest, write_manifest
from pipeline.records.read import load_problems, read_samples
from pipeline.records.schema import DataSource, RecordError, Sample, problem_id
from pipeline.records.write import ShardWriter, write_jsonl


def make_sample(i: int, pid: str = "p1") -> Sample:
    return Sample(
        id=f"{pid}/{i}",
        problem_id=pid,
        sample_index=i,
        problem="What is 1+1?",
        answer="2",
        prompt=[{"role": "user", "content": "What is 1+1?"}],
        completion="<think>\n1+1=2\n</think>\n\n\\boxed{2}",
        finish_reason="stop",
        num_prompt_tokens=12,
        num_completion_tokens=20,
        teacher="tiny",
        sampling={"temperature": 0.6},
        source="toy",
    )


def test_samples_round_trip_through_shards(tmp_path):
    writer = ShardWriter(tmp_path)
    writer.write([make_sample(0), make_sample(1)])
    writer.write([make_sample(0, "p2")])
    assert [p.name for p in writer.existing()] == ["samples-00000.jsonl", "samples-00001.jsonl"]
    assert list(read_samples(tmp_path)) == [make_sample(0), make_sample(1), make_sample(0, "p2")]


def test_problems_with_field_mapping_from_jsonl_and_parquet(tmp_path):
    rows = [
        {"question": "What is 2+3?", "solution": 5, "level": 1},
        {"question": "Name 1.", "solution": None},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    for name in ("p.jsonl", "p.parquet"):
        source = DataSource(path=str(tmp_path / name), fields={"question": "problem", "solution": "answer"})
        problems = load_problems(source)
        assert [p.problem for p in problems] == ["What is 2+3?", "Name 1."]
        assert problems[0].answer == "5" and problems[1].answer is None
        assert problems[0].id == problem_id("What is 2+3?") and problems[0].metadata == {"level": 1}
    assert (
        len(
            load_problems(DataSource(path=str(tmp_path / "p.jsonl"), limit=1, fields={"question": "problem"}))
        )
        == 1
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"problem": "a"}', '{"problem": "b"'], r"p.jsonl:2: not valid JSON"),
        (['{"problem": "a"}', "", '{"answer": "1"}'], r"p.jsonl:3: field 'problem' is missing"),
        (['{"problem": 3}'], r"p.jsonl:1: field 'problem' must be str, got int"),
        (["[1, 2]"], r"p.jsonl:1: expected a JSON object"),
        (
            ['{"id": "x", "problem": "a"}', '{"id": "x", "problem": "b"}'],
            r"p.jsonl:2: field 'id': duplicate id",
        ),
    ],
)
def test_malformed_problem_lines_name_file_line_and_field(tmp_path, lines, message):
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=message):
        load_problems(DataSource(path=str(tmp_path / "p.jsonl")))


def test_a_missing_problem_column_names_the_columns_found_and_the_mapping_to_write(tmp_path):
    table = pa.table({"idx": [1], "question": ["What is 2+3?"], "final_answer": ["5"]})
    pq.write_table(table, tmp_path / "p.parquet")
    with pytest.raises(RecordError) as e:
        load_problems(DataSource(path=str(tmp_path / "p.parquet")))
    assert str(e.value) == (
        f"{tmp_path / 'p.parquet'} row 0: field 'problem' is missing; the columns here are: idx, question, "
        "final_answer; map the problem's column to it in the recipe, e.g. "
        "`problems.fields: {question: problem, final_answer: answer}` (the `fields:` of this source)"
    )
    mapped = load_problems(
        DataSource(path=str(tmp_path / "p.parquet"), fields={"question": "problem", "final_answer": "answer"})
    )
    assert [(p.problem, p.answer) for p in mapped] == [("What is 2+3?", "5")]


def test_a_mapping_from_a_column_the_file_lacks_says_so(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    with pytest.raises(
        RecordError, match=r"'fields' maps column 'questoin' to it, but the columns here are: "
    ):
        load_problems(DataSource(path=str(tmp_path / "p.jsonl"), fields={"questoin": "problem"}))


def test_malformed_sample_names_file_line_and_field(tmp_path):
    row = dataclasses.asdict(make_sample(0))
    good = json.dumps(row)
    del row["finish_reason"]
    (tmp_path / "s.jsonl").write_text(good + "\n" + json.dumps(row) + "\n")
    with pytest.raises(RecordError, match=r"s.jsonl:2: field 'finish_reason' is missing"):
        list(read_samples(tmp_path / "s.jsonl"))


def test_data_source_needs_exactly_one_origin():
    with pytest.raises(ValueError, match="exactly one"):
        DataSource()
    with pytest.raises(ValueError, match="exactly one"):
        DataSource(path="a.jsonl", hub="x/y")


WRITER = textwrap.dedent(
    """
    import sys, time
    from pipeline.records import ShardWriter, write_manifest
    writer = ShardWriter(sys.argv[1])
    writer.write([{"id": f"done/{i}"} for i in range(3)])
    def slow():
        for i in range(10**6):
            if i == 200:
                print("mid-shard", flush=True)
            if i >= 200:
                time.sleep(0.01)
            yield {"id": f"p/{i}", "pad": "x" * 1000}
    writer.write(slow())
    write_manifest(sys.argv[1], "test", {}, [], {})
    """
)


def test_writer_killed_mid_shard_leaves_no_torn_file_and_no_manifest(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "mid-shard"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["samples-00000.jsonl"]  # the complete first shard; the torn one never got its name
    assert [
        json.loads(line)["id"] for line in (tmp_path / "samples-00000.jsonl").read_text().splitlines()
    ] == ["done/0", "done/1", "done/2"]
    assert read_manifest(tmp_path) is None
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the partial write, hidden
    ShardWriter(tmp_path)  # a new writer removes it
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_manifest_records_config_commit_versions_inputs_counts(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [{"a": 1}])
    write_manifest(tmp_path, "generate", {"model": "m"}, ["in.jsonl"], {"samples": 1})
    m = read_manifest(tmp_path)
    assert m["stage"] == "generate" and m["config"] == {"model": "m"} and m["counts"] == {"samples": 1}
    assert m["inputs"] == ["in.jsonl"] and "torch" in m["packages"] and "reasoning-distill" in m["packages"]
    assert "git_commit" in m and m["python"].count(".") == 2


def test_folder_of_shard_folders_reads_as_one_dataset(tmp_path):
    for shard in range(2):
        ShardWriter(tmp_path / f"shard-{shard}").write([make_sample(i, f"s{shard}") for i in range(2)])
    ids = [s.id for s in read_samples(tmp_path)]
    assert ids == ["s0/0", "s0/1", "s1/0", "s1/1"]
    with pytest.raises(RecordError, match="no such file"):
        list(read_samples(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordError, match="no .jsonl or .parquet"):
        list(read_samples(empty))


def test_the_toy_benchmark_is_read_from_the_checkout_without_a_path():
    from pipeline.records.benchmarks import load_benchmark

    problems = load_benchmark("toy")
    assert len(problems) >= 200 and all(p.answer for p in problems)


def test_a_hub_dataset_with_a_limit_is_streamed_and_only_its_first_rows_read(tmp_path, monkeypatch):
    """`hub:` with `limit:` streams: the first rows come without the whole set being downloaded or cached.
    (A dataset folder stands in for a Hub repository: `datasets` resolves both the same way, offline here.)"""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    rows = [{"question": f"What is {i}+1?", "answer": str(i + 1)} for i in range(5000)]
    pq.write_table(
        pa.Table.from_pylist(rows), repo / "data" / "train-00000-of-00001.parquet", row_group_size=500
    )
    import datasets

    cache = tmp_path / "cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)  # read at import: the module's own value
    source = DataSource(hub=str(repo), fields={"question": "problem"}, limit=3)
    assert [p.problem for p in load_problems(source)] == ["What is 0+1?", "What is 1+1?", "What is 2+1?"]
    assert not list(cache.rglob("*.arrow"))  # streamed: nothing materialised
    whole = DataSource(hub=str(repo), fields={"question": "problem"})
    assert len(load_problems(whole)) == 5000 and list(
        cache.rglob("*.arrow")
    )  # without a limit: the whole set
