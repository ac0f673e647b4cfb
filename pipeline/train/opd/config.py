"""Configuration of the opd stage (`distill opd --config recipes/students/<student>/opd.yaml`).

The student (a local folder or Hub id, usually after `sft`), the problems it practises on (read and prompted
exactly as `generate` reads and prompts them), its teachers by problem `source`, and `opd:` (the loss). The
`trainer:` block is `trl.DistillationConfig` verbatim: rollout length (`max_completion_length`), sampling
(`temperature`, `top_p`), the generalised-JSD `beta`, `use_vllm`, ... are TRL's and are validated by TRL.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pipeline.config import ConfigError, Where
from pipeline.errors import UserError
from pipeline.generate.config import PromptConfig, ServerConfig
from pipeline.passthrough import check_block
from pipeline.records.schema import DataSource
from pipeline.train.opd.privileged import PrivilegedContext
from pipeline.train.sft.config import LaunchSettings, PeftSettings, trainer_kwargs

ANY_SOURCE = "*"


class TeacherError(UserError):
    """A teacher that cannot be reached or answers wrongly; the message names its URL, never its key."""


@dataclass(frozen=True)
class TeacherServer(ServerConfig):
    """`generate`'s server block, where `base_url` may also list several replicas of the same served model."""

    base_url: str | tuple[str, ...] = "http://127.0.0.1:8000/v1"
    """One `vllm serve` (or a router in front of several that forwards `/tokenize`), or a list of replicas of the
    same model: the client spreads the requests over them and re-sends a failed replica's requests to the others.
    `concurrency` is then per replica."""

    def __post_init__(self) -> None:
        urls = self.urls()
        if not urls or len(set(urls)) != len(urls):
            raise ValueError("server.base_url: give one URL, or a list of distinct replica URLs")

    def urls(self) -> tuple[str, ...]:
        return (self.base_url,) if isinstance(self.base_url, str) else tuple(self.base_url)


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher: a local model (loaded beside the student) or a served one (`vllm serve` on its own GPUs)."""

    model: str | None = None
    """A local folder or Hub id with the student's tokenizer (a vocabulary padded to another size is fine)."""
    revision: str | None = None
    server: TeacherServer | None = None
    """Stock `vllm serve` replicas (one URL or a list): they score the student's token ids with top-k prompt
    logprobs. `server.model` is the served model name; the API key is read from `server.api_key_env`, never
    logged."""
    self_distill: bool = False
    """The teacher is the student's own model (pipeline/train/self_distill.py): `model` an earlier checkpoint or
    converged model of the same architecture and tokenizer, or, when absent, a frozen copy of the student's
    starting weights (the stage's `model` at its `revision`)."""
    privileged: PrivilegedContext | None = None
    """The teacher reads each problem's reference (its gold `answer`, or another field of the record) in its
    prompt; the student, which wrote the rollout, did not (pipeline/train/opd/privileged.py)."""
    weight: float = 1.0
    """Its share when a source lists several teachers (their distributions are mixed per token, weights
    normalised by their sum: pipeline/train/opd/mixture.py)."""

    def __post_init__(self) -> None:
        if self.self_distill and self.server is not None:
            raise ValueError(
                "a self_distill teacher is the student's own weights, loaded beside it: drop 'server'"
            )
        if (self.model is None) == (self.server is None) and not self.self_distill:
            raise ValueError("a teacher is either 'model' (local) or 'server' (served), exactly one of them")

    def describe(self) -> str:
        """How logs and errors name the teacher: the model, or the served name and its URL(s) (never the key)."""
        if self.model is not None:
            return self.identity()
        return f"{self.identity()} at {', '.join(self.server.urls())}"

    def identity(self) -> str:
        """Which model teaches, for the manifest, the model card and the resume check: a served teacher by its
        served name only, so a run resumes after a replica moved, was lost or was added."""
        if self.model is not None:
            return self.model + (f"@{self.revision}" if self.revision else "")
        return f"{self.server.model or 'teacher'} (served)"


@dataclass(frozen=True)
class OPDSettings:
    loss: Literal["sampled_reverse_kl", "jsd"] = "sampled_reverse_kl"
    """sampled_reverse_kl: per-token reverse KL on the tokens the student sampled, as Qwen3 and tinker-cookbook
    train (each token's weight is log p_student - log p_teacher of that token); jsd: TRL's generalised JSD with
    `trainer.beta` (0 forward KL, 1 reverse KL) over the teacher's full distribution or its top-k (`support`)."""
    support: Literal["topk", "full"] = "topk"
    """jsd only. full: every vocabulary entry (local teachers only; TRL's own chunked loss); topk: the teacher's
    `topk` most likely tokens plus a tail outcome (`tail`), which a served teacher can return."""
    topk: int = 20
    """Teacher top-k per token for `support: topk` (a served vLLM caps this at its --max-logprobs, 20 by default)."""
    tail: Literal["bucket", "renormalize"] = "bucket"
    """What happens to the probability outside the teacher's top-k (as in kd: pipeline/train/losses.py)."""
    chunk_size: int = 256
    """Completion positions whose full-vocabulary logits exist at once (memory bound of the loss and of a
    local teacher's scoring)."""

    def __post_init__(self) -> None:
        if self.topk < 1 or self.chunk_size < 1:
            raise ValueError("opd.topk and opd.chunk_size must be >= 1")


@dataclass(frozen=True)
class OPDStageConfig:
    model: str
    """The student: a local folder (e.g. an sft output or one of its checkpoints) or a Hub id."""
    problems: DataSource
    """Problem records, as `generate` reads them (JSONL, parquet or a Hub dataset with a field mapping)."""
    teachers: dict[str, TeacherSpec | list[TeacherSpec]]
    """Problem `source` -> its teacher, or a list of teachers with `weight`s whose distributions are mixed per
    token; the key "*" serves every source not named. Every source in the data must map to a teacher, or the
    stage stops before training and lists the unmapped ones."""
    output: str = "runs/opd"
    revision: str | None = None
    tokenizer: str | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """The same prompt block as `generate` and `eval`: the student is prompted exactly as in SFT and eval."""
    opd: OPDSettings = field(default_factory=OPDSettings)
    peft: PeftSettings = field(default_factory=PeftSettings)
    trainer: dict[str, Any] = field(default_factory=dict)
    """`trl.DistillationConfig` arguments, verbatim (`output_dir` is `output`)."""
    launch: LaunchSettings = field(default_factory=LaunchSettings)
    resume: bool = True
    """Continue from the latest checkpoint in `output` (with the same teachers) when there is one."""
    check_template: bool = True
    """Refuse to train when a teacher renders the prompt or tokenises a completion to other ids than the student."""

    def __post_init__(self) -> None:
        if not self.teachers:
            raise ValueError("'teachers' needs at least one entry (source -> teacher; '*' for every source)")
        from pipeline.train.opd.mixture import check_mixtures

        check_mixtures(self)
        if "output_dir" in self.trainer:
            raise ValueError("set 'output', not 'trainer.output_dir' (the stage owns the output folder)")
        if self.peft.method == "qlora":
            raise ValueError(
                "opd trains full or LoRA students (TRL's DistillationTrainer reads lm_head directly)"
            )
        for (
            key,
            spec,
        ) in self.teachers.items():  # a self-distillation teacher without a path: the student's copy
            if isinstance(spec, list):
                if any(m.privileged or m.self_distill for m in spec):
                    raise ValueError(f"teachers.{key}: a mixture of teachers takes neither 'privileged' nor "
                                     "'self_distill' members (give that teacher a source of its own)")  # fmt: skip
                continue
            if spec.self_distill and spec.model is None:
                self.teachers[key] = replace(spec, model=self.model, revision=self.revision)

    def teacher_for(self, source: str) -> str | None:
        """The `teachers` key serving `source`, or None when none does."""
        if source in self.teachers:
            return source
        return ANY_SOURCE if ANY_SOURCE in self.teachers else None

    def check(self, source: Any) -> None:
        """Cross-field checks that need the trainer block: these name the recipe line."""
        t = self.trainer.get("temperature", 1.0)
        if self.opd.loss == "sampled_reverse_kl" and t != 1.0:
            raise ConfigError(
                f"{source.where('trainer.temperature')}: opd.loss sampled_reverse_kl needs trainer.temperature "
                "1.0: the per-token estimate is unbiased only for tokens sampled from the student itself; use "
                "opd.loss: jsd to train at another temperature",
                key="trainer.temperature",
            )
        unfit = {
            k: "served: it returns its top-k" for k, t in self.flat_teachers().items() if t.server is not None
        }
        unfit |= {
            k: "privileged: it reads another prompt" for k, t in self.flat_teachers().items() if t.privileged
        }
        if self.opd.loss == "jsd" and self.opd.support == "full" and unfit:
            raise ConfigError(
                f"{source.where('opd.support')}: opd.support full is TRL's own loss over every logit of a local "
                "teacher reading the student's prompt; not so for "
                + ", ".join(f"teacher {k} ({why})" for k, why in unfit.items())
                + ": use opd.support: topk",
                key="opd.support",
            )

    def flat_teachers(self) -> dict[str, TeacherSpec]:
        """Every teacher by its own key: a source's key, or `source[i]` for the i-th of a mixed list."""
        from pipeline.train.opd.mixture import flatten

        return flatten(self.teachers)

    def distillation_config_kwargs(self) -> dict[str, Any]:
        return trainer_kwargs(self.output, self.trainer)

    def check_passthrough(self, where: Where) -> None:
        """Hand `trainer:` to TRL and `peft.lora:` to PEFT."""
        import peft
        import trl

        check_block(self.trainer, trl.DistillationConfig, "trainer", "trl.DistillationConfig", where)
        check_block(self.peft.lora, peft.LoraConfig, "peft.lora", "peft.LoraConfig", where)
        for name, build in (
            ("trainer", lambda: trl.DistillationConfig(**self.distillation_config_kwargs())),
            ("peft.lora", lambda: peft.LoraConfig(**self.peft.lora)),
        ):
            try:
                build()
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where(name)}: '{name}' rejected by its library: {e}", key=name) from None
