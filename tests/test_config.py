"""Recipes load into typed dataclasses; unknown keys, bad types and bad overrides are errors that say where."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from pipeline.config import ConfigError, load_config, to_dict


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.6
    top_p: float = 0.95
    n: int = 1
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Recipe:
    model: str = "tiny"
    engine_kind: Literal["vllm", "openai"] = "vllm"
    limit: int | None = None
    sampling: Sampling = field(default_factory=Sampling)
    engine: dict[str, Any] = field(default_factory=dict)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_defaults_come_from_the_dataclass_and_the_recipe_sets_what_differs(tmp_path):
    cfg = load_config(Recipe, write(tmp_path, "model: qwq\nsampling:\n  n: 4\n"))
    assert cfg.model == "qwq" and cfg.sampling.n == 4 and cfg.sampling.temperature == 0.6


def test_unknown_key_names_full_path_file_line_and_closest_key(tmp_path):
    path = write(tmp_path, "model: qwq\nsampling:\n  n: 4\n  temprature: 0.7\n")
    with pytest.raises(ConfigError) as e:
        load_config(Recipe, path)
    assert str(e.value) == (
        f"unknown key 'sampling.temprature' in {path}:4; did you mean 'sampling.temperature'?"
    )


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'zzz'.*valid keys: model, engine_kind"):
        load_config(Recipe, write(tmp_path, "zzz: 1\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sampling:\n  n: four\n", "'sampling.n' must be int, got str 'four'"),
        ("sampling:\n  n: 2.5\n", "'sampling.n' must be int, got float"),
        ("sampling:\n  temperature: true\n", "'sampling.temperature' must be float, got bool"),
        ("engine_kind: sglang\n", "'engine_kind' must be one of 'vllm', 'openai'"),
        ("sampling: 3\n", "'sampling' must be a mapping"),
        ("sampling:\n  stop: '</s>'\n", "'sampling.stop' must be list"),
        ("limit: [1]\n", "'limit' must be int, got list"),
    ],
)
def test_wrong_types_are_errors_naming_the_key_and_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")) as e:
        load_config(Recipe, write(tmp_path, text))
    assert f"{tmp_path / 'x.yaml'}:" in str(e.value)


def test_ints_widen_to_float_and_scientific_notation_is_a_float(tmp_path):
    cfg = load_config(Recipe, write(tmp_path, "sampling:\n  temperature: 1\n  top_p: 9e-1\n"))
    assert cfg.sampling.temperature == 1.0 and isinstance(cfg.sampling.temperature, float)
    assert cfg.sampling.top_p == pytest.approx(0.9)


def test_overrides_use_the_same_checks(tmp_path):
    path = write(tmp_path, "model: qwq\n")
    cfg = load_config(
        Recipe,
        path,
        [
            "sampling.n=8",
            "engine.tensor_parallel_size=4",
            "limit=null",
            "sampling.stop=['</s>', '<|im_end|>']",
        ],
    )
    assert cfg.sampling.n == 8 and cfg.engine == {"tensor_parallel_size": 4} and cfg.limit is None
    assert cfg.sampling.stop == ["</s>", "<|im_end|>"]
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'sampling.temprature' in override 'sampling.temprature=\.\.\.'"
        r"; did you mean 'sampling.temperature'\?",
    ):
        load_config(Recipe, path, ["sampling.temprature=0.7"])
    with pytest.raises(ConfigError, match="'sampling.n' must be int"):
        load_config(Recipe, path, ["sampling.n=many"])
    with pytest.raises(ConfigError, match="not of the form dotted.key=value"):
        load_config(Recipe, path, ["=3"])


def test_passthrough_blocks_are_kept_verbatim(tmp_path):
    cfg = load_config(
        Recipe, write(tmp_path, "engine:\n  tensor_parallel_size: 8\n  whatever_vllm_takes: [1]\n")
    )
    assert cfg.engine == {"tensor_parallel_size": 8, "whatever_vllm_takes": [1]}


def test_configs_are_frozen_and_dump_back_to_plain_data(tmp_path):
    cfg = load_config(Recipe, write(tmp_path, "model: m\n"))
    with pytest.raises(AttributeError):
        cfg.model = "other"  # type: ignore[misc]
    assert to_dict(cfg)["sampling"] == {"temperature": 0.6, "top_p": 0.95, "n": 1, "stop": []}


def test_invalid_yaml_and_non_mapping_recipes_say_where(tmp_path):
    with pytest.raises(ConfigError, match=r"x.yaml:2: not valid YAML"):
        load_config(Recipe, write(tmp_path, "model: a\n  b: : c\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Recipe, write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_config(Recipe, tmp_path / "missing.yaml")
