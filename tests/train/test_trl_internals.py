"""The TRL internals the opd and kd trainers rely on: pinned to the tested range, checked at start."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import trl
from packaging.specifiers import SpecifierSet
from trl import DistillationTrainer, SFTTrainer

from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.train.trl_internals import OPD_ATTRIBUTES, OPD_METHODS, TESTED_TRL, require_members
from tests.conftest import REPO
from tests.helpers import write_problems


def test_pyproject_pins_the_tested_trl_range_and_the_locks_and_the_venv_agree():
    pinned = re.search(r'^\s*"trl([^"]*)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert SpecifierSet(pinned) == SpecifierSet(TESTED_TRL)
    for lock in ("cpu.lock", "gpu.lock"):
        locked = re.search(r"^trl==(\S+)$", (REPO / "requirements" / lock).read_text(), re.M).group(1)
        assert locked in SpecifierSet(TESTED_TRL), lock
    assert trl.__version__ in SpecifierSet(TESTED_TRL)


def test_opd_refuses_a_trl_without_a_method_it_overrides_before_training(
    tiny_model_dir, teacher_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.delattr(DistillationTrainer, "_generate")  # as a TRL that renamed it would look
    out = tmp_path / "out"
    args = [
        f"model={tiny_model_dir}",
        f"problems.path={write_problems(tmp_path / 'p.jsonl')}",
        f"output={out}",
    ]
    args += [f"teachers={{'*': {{model: {teacher_dir}}}}}", "trainer.max_steps=1"]
    assert main(["opd", "--config", str(REPO / "recipes/demo/opd.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert (
        f"error: TRL {trl.__version__}: trl.trainer.distillation_trainer.DistillationTrainer has no method "
        f"'_generate', which OPDTrainer relies on; install the TRL the trainers were tested with: "
        f"pip install 'trl{TESTED_TRL}'" in err
    )
    assert "Traceback" not in err and not list(out.glob("checkpoint-*"))


def test_kd_refuses_a_trl_whose_method_takes_other_parameters_before_any_model_loads(monkeypatch):
    from pipeline.train.kd.config import KDSettings
    from pipeline.train.kd.trainer import KDTrainer

    def older(self, dataset, processing_class, args, packing, dataset_name):  # no formatting_func
        return dataset

    monkeypatch.setattr(SFTTrainer, "_prepare_dataset", older)
    with pytest.raises(
        UserError, match=r"'_prepare_dataset' takes \(dataset, processing_class, args, packing, "
    ):
        KDTrainer(model="no-such-model", kd=KDSettings())


def test_an_attribute_trl_no_longer_sets_is_named():
    instance = SimpleNamespace(_tokenizer=None, _metrics={}, temperature=1.0, beta=0.5)  # no _step
    with pytest.raises(
        UserError, match="has no attribute '_step' after __init__, which OPDTrainer relies on"
    ):
        require_members("OPDTrainer", DistillationTrainer, OPD_METHODS, OPD_ATTRIBUTES, instance)
    require_members("OPDTrainer", DistillationTrainer, OPD_METHODS)  # this TRL has every method
