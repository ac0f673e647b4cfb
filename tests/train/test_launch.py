"""What a training stage may do to its output folder, on real folders: refuse another stage's, refuse
checkpoints made with other settings (kd, opd: the same rule as sft's, whose full runs are in test_sft.py), and
claim the folder only when training starts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import UserError
from pipeline.outputs import MARK, FolderLock, mark
from pipeline.records.manifest import write_manifest
from pipeline.train.kd.config import KDStageConfig
from pipeline.train.launch import claim_output, release_output, resume_point, resume_settings
from pipeline.train.opd.config import OPDStageConfig
from tests.conftest import REPO


def kd_config(out: Path, *extra: str) -> KDStageConfig:
    return load_config(
        KDStageConfig, None, ["model=student-a", "data=[{path: data}]", f"output={out}", *extra]
    )


def opd_config(out: Path, *extra: str) -> OPDStageConfig:
    base = ["model=student-a", "problems.path=p.jsonl", "teachers={'*': {model: teacher-a}}", f"output={out}"]
    return load_config(OPDStageConfig, REPO / "recipes/demo/opd.yaml", [*base, *extra])


def checkpoint(out: Path, step: int, complete: bool = True) -> Path:
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


@pytest.mark.parametrize(
    ("make", "change", "expected"),
    [
        (kd_config, "model=student-b", "model: 'student-a' -> 'student-b'"),
        (kd_config, "kd={teacher: online, teacher_model: t}", "kd.teacher: 'offline' -> 'online'"),
        (kd_config, "peft.method=lora", "peft: "),
        (opd_config, "model=student-b", "model: 'student-a' -> 'student-b'"),
        (opd_config, "teachers={'*': {model: teacher-b}}", "teachers: "),
    ],
)
def test_checkpoints_made_with_other_settings_are_refused_and_nothing_is_touched(
    tmp_path, make, change, expected
):
    out = tmp_path / "out"
    first = make(out)
    checkpoint(out, 2)
    checkpoint(out, 4, complete=False)  # a half-saved one: removed only when training really starts
    mark(out, "kd" if make is kd_config else "opd", resume_settings(first))
    before = sorted(str(p) for p in out.rglob("*"))
    refused = f"holds checkpoints of another run \\(checkpoint-2\\); changed: .*{expected}"
    with pytest.raises(UserError, match=refused):
        resume_point(make(out, change), "kd" if make is kd_config else "opd")
    assert sorted(str(p) for p in out.rglob("*")) == before
    # the same settings with a longer schedule resume from the last complete checkpoint
    assert resume_point(make(out, "trainer.max_steps=99"), "kd" if make is kd_config else "opd").endswith(
        "-2"
    )


def test_claiming_the_output_removes_half_saved_checkpoints_and_the_old_manifest_on_the_main_process_only(
    tmp_path,
):
    out = tmp_path / "out"
    cfg = kd_config(out)
    checkpoint(out, 2)
    checkpoint(out, 4, complete=False)
    write_manifest(out, "kd", {}, [], {})
    mark(out, "kd", resume_settings(cfg))
    assert claim_output(cfg, "kd", main_process=False).endswith("checkpoint-2")
    assert (out / "checkpoint-4").exists() and (
        out / "manifest.json"
    ).exists()  # another rank touches nothing
    # another run training into the folder (checkpoint-4 the one it is saving): the main process is refused in one
    # line and removes nothing
    other = FolderLock("kd")
    other.take(out)
    with pytest.raises(UserError, match=re.escape(f"{out} is being written by another distill kd run")):
        claim_output(cfg, "kd", main_process=True)
    assert (out / "checkpoint-4").exists() and (out / "manifest.json").exists()
    other.release()
    assert claim_output(cfg, "kd", main_process=True).endswith("checkpoint-2")
    assert not (out / "checkpoint-4").exists() and not (out / "manifest.json").exists()
    assert json.loads((out / MARK).read_text()) == {"stage": "kd", "settings": resume_settings(cfg)}
    with pytest.raises(UserError, match="is being written by another distill kd run"):
        other.take(out)  # this run holds it now, until it releases it (or ends)
    release_output(out)
    other.take(out)
    other.release()


def test_a_stage_refuses_another_stages_folder_before_anything(tmp_path):
    out = tmp_path / "out"
    checkpoint(out, 2)
    mark(out, "sft", {})
    with pytest.raises(UserError, match="holds a started sft output"):
        resume_point(opd_config(out), "opd")


def test_resume_false_never_trains_over_checkpoints_or_a_finished_model(tmp_path):
    out = tmp_path / "out"
    cfg = kd_config(out, "resume=false")
    assert resume_point(cfg, "kd") is None  # a new folder: fine
    checkpoint(out, 2)
    with pytest.raises(
        UserError, match="field 'resume': resume: false starts a new run, but .* holds checkpoint-2"
    ):
        resume_point(cfg, "kd")
