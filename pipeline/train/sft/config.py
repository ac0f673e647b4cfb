"""Configuration of the sft stage (`distill sft --config recipes/students/<student>/sft.yaml`).

The `trainer:` block is `trl.SFTConfig` verbatim (TRL validates it); `peft.lora:` is `peft.LoraConfig`
verbatim and `peft.quantization:` is `transformers.BitsAndBytesConfig` verbatim. Only what no library owns is
declared here: the student, the data mixture, the method, merging and how to launch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.config import ConfigError, Where
from pipeline.passthrough import check_block
from pipeline.records.schema import DataSource


def trainer_kwargs(output: str, trainer: dict[str, Any]) -> dict[str, Any]:
    """A `trainer:` block for TRL's config class, plus what depends on the machine: the output folder, and no
    bf16 where there is no GPU to run it (the sft, kd and opd stages alike)."""
    import torch

    kwargs = {"output_dir": output, **trainer}
    if not torch.cuda.is_available():
        kwargs.setdefault("bf16", False)
        kwargs.setdefault("use_cpu", True)
    return kwargs


@dataclass(frozen=True)
class DatasetEntry(DataSource):
    """One dataset of the training mixture: where it comes from (the filter stage's output folder, a file, or a
    Hub dataset, as any DataSource, `fields` renames included) and its weight in the mixture."""

    weight: float = 1.0
    """Fraction (< 1: a seeded random subset) or multiple (> 1: repeated) of this dataset's examples."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight <= 0:
            raise ValueError("'weight' must be > 0")


@dataclass(frozen=True)
class PeftSettings:
    method: Literal["full", "lora", "qlora"] = "full"
    """full fine-tuning, LoRA, or QLoRA (4-bit base weights; needs a CUDA GPU and bitsandbytes)."""
    lora: dict[str, Any] = field(
        default_factory=lambda: {
            "r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            "target_modules": "all-linear",
            "task_type": "CAUSAL_LM",
        }
    )
    """`peft.LoraConfig` arguments, verbatim."""
    quantization: dict[str, Any] = field(
        default_factory=lambda: {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": "bfloat16",
        }
    )
    """qlora: `transformers.BitsAndBytesConfig` arguments, verbatim."""
    merge: bool = False
    """After LoRA/QLoRA training, also save `merged/`: base + adapter as plain weights (base reloaded unquantized)."""


@dataclass(frozen=True)
class LaunchSettings:
    accelerate_config: str | None = None
    """A file under recipes/accelerate/ (ddp, zero2, zero3, fsdp): the stage relaunches itself under
    `accelerate launch --config_file ...`. Also `make sft ACCELERATE=recipes/accelerate/zero3.yaml`."""
    num_processes: int | None = None
    """Overrides the accelerate config's process count (e.g. GPUs per node x nodes)."""


@dataclass(frozen=True)
class SFTStageConfig:
    model: str
    """The student's base model: a local folder or a Hub id."""
    data: list[DatasetEntry]
    output: str = "runs/sft"
    revision: str | None = None
    tokenizer: str | None = None
    from_scratch: bool = False
    """Initialise the weights randomly from the model's config instead of loading them (demo students)."""
    model_config: dict[str, Any] = field(default_factory=dict)
    """Changes to the model's config before loading, e.g. a longer context for 4k-context bases:
    `{max_position_embeddings: 32768, rope_parameters: {rope_theta: 300000}}`."""
    peft: PeftSettings = field(default_factory=PeftSettings)
    trainer: dict[str, Any] = field(default_factory=dict)
    """`trl.SFTConfig` arguments, verbatim (`output_dir` is `output`)."""
    launch: LaunchSettings = field(default_factory=LaunchSettings)
    resume: bool = True
    """Continue from the latest checkpoint in `output` when there is one."""
    check_template: bool = True
    """Refuse to train when the chat template drops `<think>` content, the supervised span does not end on
    the student's stop token, or the prompt is not masked."""

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("'data' needs at least one dataset")
        if self.from_scratch and self.peft.method != "full":
            raise ValueError("from_scratch trains every weight: use peft.method: full")
        if "output_dir" in self.trainer:
            raise ValueError("set 'output', not 'trainer.output_dir' (the stage owns the output folder)")

    def sft_config_kwargs(self) -> dict[str, Any]:
        return trainer_kwargs(self.output, self.trainer)

    def check_passthrough(self, where: Where) -> None:
        """Hand `trainer:`, `peft.lora:` and `peft.quantization:` to TRL, PEFT and transformers."""
        import peft
        import trl
        from transformers import BitsAndBytesConfig

        check_block(self.trainer, trl.SFTConfig, "trainer", "trl.SFTConfig", where)
        check_block(self.peft.lora, peft.LoraConfig, "peft.lora", "peft.LoraConfig", where)
        for name, build in (
            ("trainer", lambda: trl.SFTConfig(**self.sft_config_kwargs())),
            ("peft.lora", lambda: peft.LoraConfig(**self.peft.lora)),
            ("peft.quantization", lambda: BitsAndBytesConfig(**self.peft.quantization)),
        ):
            try:
                build()
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where(name)}: '{name}' rejected by its library: {e}", key=name) from None
