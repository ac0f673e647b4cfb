"""Stage hand-offs: require_complete on plain, sharded, unfinished and foreign folders (real files)."""

from __future__ import annotations

import pytest

from pipeline.handoff import IncompleteInput, require_complete, require_trained_model
from pipeline.records.manifest import write_manifest


def test_a_complete_folder_gives_its_manifest_and_files_pass(tmp_path):
    write_manifest(tmp_path / "gen", "generate", {}, [], {"samples": 3})
    assert require_complete(tmp_path / "gen", "generate")["counts"] == {"samples": 3}
    (tmp_path / "own.jsonl").write_text("{}\n")
    assert (
        require_complete(tmp_path / "own.jsonl", "generate") is None
    )  # a user's own file is no stage output


def test_an_unfinished_or_foreign_folder_is_refused_naming_the_stage_to_rerun(tmp_path):
    (tmp_path / "gen").mkdir()
    with pytest.raises(
        IncompleteInput, match=r"gen: field 'input': no manifest.json: .*rerun `distill generate`"
    ):
        require_complete(tmp_path / "gen", "generate")
    assert require_complete(tmp_path / "gen", "generate", allow_incomplete=True) is None
    write_manifest(tmp_path / "gen", "filter", {}, [], {})
    with pytest.raises(
        IncompleteInput, match=r"the output of stage 'filter', expected the output of generate"
    ):
        require_complete(tmp_path / "gen", "generate")


def test_shard_folders_are_complete_only_all_together(tmp_path):
    gen = tmp_path / "gen"
    write_manifest(gen / "shard-00000-of-00003", "generate", {}, [], {})
    write_manifest(gen / "shard-00002-of-00003", "generate", {}, [], {})
    with pytest.raises(IncompleteInput, match=r"1 of 3 shard folders are missing \(shard-00001-of-00003\)"):
        require_complete(gen, "generate")
    (gen / "shard-00001-of-00003").mkdir()
    with pytest.raises(IncompleteInput, match=r"shard-00001-of-00003: field 'input': no manifest.json"):
        require_complete(gen, "generate")
    write_manifest(gen / "shard-00001-of-00003", "generate", {}, [], {})
    assert len(require_complete(gen, "generate")["shards"]) == 3


def test_models_to_evaluate_must_be_finished_training_outputs_or_complete_checkpoints(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    require_trained_model(base)  # a model made elsewhere
    require_trained_model("Qwen/Qwen2.5-0.5B")  # a Hub id
    student = tmp_path / "student"
    (student / "checkpoint-3").mkdir(parents=True)
    (student / "checkpoint-3" / "config.json").write_text("{}")
    with pytest.raises(
        IncompleteInput, match=r"student: field 'model': no manifest.json: the sft/kd/opd run"
    ):
        require_trained_model(student)
    with pytest.raises(IncompleteInput, match=r"checkpoint-3: field 'model': an incomplete checkpoint"):
        require_trained_model(student / "checkpoint-3")
    (student / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (student / "checkpoint-3" / "model.safetensors").write_bytes(b"x")
    require_trained_model(student / "checkpoint-3")
