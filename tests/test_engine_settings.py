"""vLLM engine settings the model cannot take are refused in one line naming the recipe field, before any engine
starts; what vLLM itself refuses is translated to one line too."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError
from pipeline.engine_settings import check_engine_settings, derived_max_len, vllm_settings_error
from tests.conftest import REPO, run_distill

TEACHER = str(REPO / "data/toy-teacher")  # 1,024 positions, 2 attention heads


def where(key: str) -> str:
    return f"recipe.yaml ({key})"


@pytest.mark.parametrize(
    ("config", "length"),
    [
        ({"max_position_embeddings": 4096}, 4096),
        ({"max_position_embeddings": 4096, "seq_length": 2048}, 2048),
        ({"max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 2.0}}, 8192),
        (
            {
                "max_position_embeddings": 131072,
                "rope_scaling": {
                    "rope_type": "yarn",
                    "factor": 4.0,
                    "original_max_position_embeddings": 32768,
                },
            },
            131072,
        ),
        ({"max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, 131072),
        ({"text_config": {"max_position_embeddings": 8192}}, 8192),
        ({"hidden_size": 8}, None),
    ],
)
def test_the_models_context_is_derived_as_vllm_does(config, length):
    assert derived_max_len(config) == length


def test_settings_the_model_can_take_pass():
    check_engine_settings(TEACHER, {"max_model_len": 1024, "tensor_parallel_size": 2}, where)
    check_engine_settings("no/such-model-anywhere", {"max_model_len": 10**9}, where)  # check_model says why


def test_a_max_model_len_above_the_models_context_names_the_field(monkeypatch):
    with pytest.raises(ConfigError) as e:
        check_engine_settings(TEACHER, {"max_model_len": 4096}, where)
    assert e.value.key == "engine.max_model_len"
    assert "recipe.yaml (engine.max_model_len)" in str(e.value) and "at most 1024" in str(e.value)
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")  # vLLM's own escape hatch is honoured
    check_engine_settings(TEACHER, {"max_model_len": 4096}, where)


def test_a_tensor_parallel_size_that_does_not_divide_the_heads_names_the_field():
    with pytest.raises(
        ConfigError, match=r"'engine.tensor_parallel_size' is 4, which does not divide .* 2 atten"
    ):
        check_engine_settings(TEACHER, {"tensor_parallel_size": 4}, where)


def test_generate_refuses_before_any_engine_starts_in_one_line(tmp_path):
    out = tmp_path / "out"
    result = run_distill(
        "generate", "--config", "recipes/demo/generate.yaml", f"output={out}", "engine.max_model_len=100000"
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "field 'engine.max_model_len' is 100000" in errors[0]
    assert "Traceback" not in result.stderr and "pydantic" not in result.stderr and not out.exists()


@pytest.mark.parametrize(
    ("engine", "field", "says"),
    [
        ({"gpu_memory_utilization": 1.5}, "engine.gpu_memory_utilization", "less than or equal to 1"),
        (
            {"max_model_len": 512, "max_num_batched_tokens": 100, "enable_chunked_prefill": False},
            "engine.max_num_batched_tokens",
            "max_num_batched_tokens (100) is smaller than max_model_len (512)",
        ),
    ],
)
def test_what_vllm_refuses_is_translated_to_one_line(monkeypatch, engine, field, says):
    from vllm.engine.arg_utils import EngineArgs

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    with pytest.raises(Exception) as e:
        EngineArgs(model=TEACHER, **engine).create_engine_config()
    error = vllm_settings_error(e.value)
    assert error is not None and error.field == field
    assert says in str(error) and "\n" not in str(error)
    assert vllm_settings_error(ValueError("not vLLM's")) is None
