"""pipeline/checkpoints.py: which checkpoint a training run resumes from."""

from __future__ import annotations

import json

from pipeline.checkpoints import is_complete, latest_complete_checkpoint

STATE = json.dumps({"global_step": 4, "log_history": [{"loss": 1.5, "step": 4}], "epoch": 0.5}, indent=2)


def checkpoint(root, step, state, weights=("model.safetensors",)):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    for name in weights:
        (path / name).write_bytes(b"weights")
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


def test_a_checkpoint_is_complete_only_with_its_whole_state_and_weights(tmp_path):
    assert is_complete(checkpoint(tmp_path, 1, STATE))
    assert is_complete(checkpoint(tmp_path, 2, STATE, weights=("adapter_model.safetensors",)))
    # killed while trainer_state.json (the last file) was written: empty, or cut anywhere
    assert not is_complete(checkpoint(tmp_path, 3, ""))
    for cut in (1, len(STATE) // 2, len(STATE) - 1):
        assert not is_complete(checkpoint(tmp_path, 100 + cut, STATE[:cut])), cut
    assert not is_complete(checkpoint(tmp_path, 4, None))  # killed before it
    assert not is_complete(checkpoint(tmp_path, 5, STATE, weights=()))
    assert not is_complete(checkpoint(tmp_path, 6, "[1, 2]"))  # JSON, but not a trainer state (an object)
    index = json.dumps({"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}})
    sharded = checkpoint(tmp_path, 7, STATE, weights=("model-1.safetensors",))
    (sharded / "model.safetensors.index.json").write_text(index)
    assert not is_complete(sharded)  # a shard its index lists is missing
    (sharded / "model-2.safetensors").write_bytes(b"weights")
    assert is_complete(sharded)


def test_the_resume_skips_and_removes_newer_incomplete_checkpoints(tmp_path):
    checkpoint(tmp_path, 3, STATE)
    checkpoint(tmp_path, 4, STATE[: len(STATE) // 2])  # the state cut short by a kill
    checkpoint(tmp_path, 5, None)
    assert latest_complete_checkpoint(tmp_path, remove_incomplete=False) == tmp_path / "checkpoint-3"
    assert (tmp_path / "checkpoint-4").exists()
    assert latest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3"]
