"""Blocks passed through to TRL, PEFT and vLLM: plain `validate` and every stage check their keys against the
library's fields (with the closest key) and their values against the fields' types."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from pipeline.cli import load_stage_config
from pipeline.config import ConfigError
from pipeline.passthrough import _fits, check_block
from tests.conftest import run_distill

SFT = "recipes/demo/sft.yaml"


def where(key: str) -> str:
    return f"recipe.yaml ({key})"


@pytest.mark.parametrize(
    ("tp", "value", "fits"),
    [
        (bool, True, True),
        (bool, "ture", False),
        (bool, 1, False),
        (int, 3, True),
        (int, 3.0, False),
        (int, True, False),
        (float, 3, True),
        (float, "3e-4", False),
        (str, "cosine", True),
        (str, 7, False),
        (int | None, None, True),
        (dict | str | None, {"num_decay_steps": 4}, True),
        (dict | str | None, 4, False),
        (list[str] | str | None, ["q_proj"], True),
        (Literal["bfd", "wrapped"], "bfd", True),
        (Literal["bfd", "wrapped"], "bdf", False),
        (Any, object(), True),
    ],
)
def test_a_value_fits_its_annotation(tp: Any, value: Any, fits: bool):
    assert _fits(tp, value) is fits


@pytest.mark.parametrize(
    ("override", "field", "says"),
    [
        ("trainer.packing=ture", "trainer.packing", "must be bool (trl.SFTConfig), got str 'ture'"),
        ("trainer.learning_rate=fast", "trainer.learning_rate", "must be float"),
        ("trainer.max_steps=1.5", "trainer.max_steps", "must be int"),
        ("trainer.leraning_rate=0.1", "trainer.leraning_rate", "did you mean 'trainer.learning_rate'"),
        ("peft.lora.r=sixteen", "peft.lora.r", "must be int (peft.LoraConfig)"),
        ("peft.lora.lora_alfa=8", "peft.lora.lora_alfa", "did you mean 'peft.lora.lora_alpha'"),
    ],
)
def test_trainer_and_lora_keys_and_types_are_checked(override: str, field: str, says: str):
    with pytest.raises(ConfigError) as e:
        load_stage_config("sft", SFT, [override])
    assert e.value.key == field and says in str(e.value)
    assert f"override '{field}=...'" in str(e.value)


def test_opd_trainer_types_are_checked_against_distillation_config():
    with pytest.raises(ConfigError, match=r"'trainer.beta' must be float \(trl.DistillationConfig\)"):
        load_stage_config("opd", "recipes/demo/opd.yaml", ["trainer.beta=half"])


def test_engine_keys_and_types_are_checked_against_vllm_engine_args():
    from vllm.engine.arg_utils import EngineArgs

    check_block({"enforce_eager": True, "max_model_len": 512}, EngineArgs, "engine", "vllm.EngineArgs", where)
    with pytest.raises(ConfigError, match=r"field 'engine.enforce_eager' must be bool"):
        check_block({"enforce_eager": "yes"}, EngineArgs, "engine", "vllm.EngineArgs", where)
    with pytest.raises(ConfigError, match="did you mean 'engine.max_model_len'"):
        check_block({"max_model_length": 512}, EngineArgs, "engine", "vllm.EngineArgs", where)
    with pytest.raises(ConfigError, match="unknown key 'engine.model'"):
        check_block({"model": "x"}, EngineArgs, "engine", "vllm.EngineArgs", where, exclude={"model"})


def test_plain_validate_refuses_a_mistyped_trainer_value_in_one_line():
    result = run_distill("validate", "--config", SFT, "trainer.packing=ture")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: override 'trainer.packing=...': field 'trainer.packing' must be bool (trl.SFTConfig), got str "
        "'ture'; write true or false"
    ]
    assert "Traceback" not in result.stderr


def test_a_stage_refuses_a_mistyped_trainer_value_before_writing(tmp_path):
    out = tmp_path / "sft"
    result = run_distill("sft", "--config", SFT, f"output={out}", "trainer.gradient_checkpointing=nope")
    assert result.returncode == 2 and "field 'trainer.gradient_checkpointing' must be bool" in result.stderr
    assert not out.exists()
