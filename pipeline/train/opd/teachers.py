"""The opd stage's teachers: score the student's own tokens, locally or on served `vllm serve` replicas
(served.py), and prove first that they read the student's token ids as the student does.

    teacher = LocalTeacher(spec, init_kwargs={"dtype": "bfloat16"}, device="cuda")  # or ServedTeacher(spec)
    teacher.check_ready(student_vocab=151936)                           # it can score every id the student samples
    scores = teacher.score([(prompt_ids, completion_ids), ...], k=20)   # one TokenScores per sequence
    check_same_tokens(student_tokenizer, teacher, messages, completion_text, think_prefix=False)

A score is, for every completion token, the teacher's log-probability of that token and its k most likely
tokens with their log-probabilities, all at temperature 1 (the losses apply their own temperature). A local
teacher projects its hidden states `chunk_size` positions at a time, so no [tokens x vocab] tensor exists for a
whole batch; a served teacher is asked for top-k *prompt* logprobs of prompt + completion (a prefill, no
decoding), `server.concurrency` requests at a time per replica, with failover and retries (served.py).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import torch

from pipeline.config import ConfigError
from pipeline.prompts import prompt_ids
from pipeline.train.opd.config import TeacherError, TeacherSpec
from pipeline.train.opd.scores import Sequence, TokenScores, split_scores

log = logging.getLogger("distill.opd")


class Teacher(Protocol):
    name: str

    def score(self, sequences: list[Sequence], k: int) -> list[TokenScores]: ...
    def check_ready(self, student_vocab: int) -> None: ...
    def prompt_ids(self, messages: list[dict[str, str]], think_prefix: bool) -> list[int]: ...
    def encode(self, text: str) -> list[int]: ...


class LocalTeacher:
    """A teacher loaded beside the student (same tokenizer; a vocabulary padded to another size is fine)."""

    def __init__(
        self,
        spec: TeacherSpec,
        init_kwargs: dict[str, Any],
        device: Any,
        chunk_size: int = 256,
        chat_template: str | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name, self.chunk_size = spec.describe(), chunk_size
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model, revision=spec.revision)
        if chat_template:  # the recipe's template replaces both models' own, as in generate
            self.tokenizer.chat_template = chat_template
        kwargs = dict(init_kwargs)
        if isinstance(kwargs.get("dtype"), str) and kwargs["dtype"] != "auto":
            kwargs["dtype"] = getattr(torch, kwargs["dtype"])
        model = AutoModelForCausalLM.from_pretrained(spec.model, revision=spec.revision, **kwargs)
        self.model = model.to(device).eval().requires_grad_(False)

    def check_ready(self, student_vocab: int) -> None:
        """Refuse now a teacher with fewer embedding rows than ids the student can sample."""
        rows = self.model.get_input_embeddings().num_embeddings
        if rows < student_vocab:
            raise TeacherError(
                f"teacher {self.name} has {rows} token ids, the student samples from {student_vocab}",
                field="teachers",
                hint="use a teacher whose vocabulary holds the student's (the same tokenizer; padding is fine)",
            )

    def prompt_ids(self, messages: list[dict[str, str]], think_prefix: bool) -> list[int]:
        return prompt_ids(self.tokenizer, messages, think_prefix)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    @torch.no_grad()
    def score(self, sequences: list[Sequence], k: int) -> list[TokenScores]:
        from pipeline.train.heads import output_transform

        device = self.model.device
        rows = self.model.get_input_embeddings().num_embeddings
        if (top := max(max(p + c) for p, c in sequences)) >= rows:
            raise TeacherError(
                f"teacher {self.name}: token id {top} is outside its {rows}-row vocabulary: the student samples "
                "ids the teacher has no embedding for (a student vocabulary padded larger than the teacher's)"
            )
        width = max(len(p) + len(c) for p, c in sequences)
        ids = torch.zeros(len(sequences), width, dtype=torch.long)
        attention = torch.zeros_like(ids)
        targets = torch.zeros_like(ids, dtype=torch.bool)  # positions whose next token is a completion token
        for i, (p, c) in enumerate(sequences):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            attention[i, : len(p) + len(c)] = 1
            targets[i, len(p) - 1 : len(p) + len(c) - 1] = True
        hidden = self.model.base_model(
            input_ids=ids.to(device), attention_mask=attention.to(device)
        ).last_hidden_state
        h = hidden[targets.to(device)]
        next_tokens = ids[:, 1:][targets[:, :-1]].to(device)
        head = self.model.get_output_embeddings()
        parts = []
        for a in range(0, h.shape[0], self.chunk_size):
            logits = output_transform(self.model.config, head(h[a : a + self.chunk_size]).float())
            logp = torch.log_softmax(logits, -1)
            top = logp.topk(k, -1)
            own = logp.gather(-1, next_tokens[a : a + self.chunk_size, None])[:, 0]
            parts.append((own, top.indices.int(), top.values))
        own, top_ids, top_lps = (torch.cat(x).cpu() for x in zip(*parts, strict=True))
        return split_scores(own, top_ids, top_lps, [len(c) for _, c in sequences])


def build_teachers(
    specs: dict[str, TeacherSpec],
    init_kwargs: dict[str, Any],
    device: Any,
    chunk_size: int,
    chat_template: str | None = None,
) -> dict[str, Teacher]:
    """One teacher object per distinct spec (two sources routed to one model load it once), by `teachers` key."""
    from pipeline.train.opd.served import ServedTeacher

    made: dict[TeacherSpec, Teacher] = {}
    for key, spec in specs.items():
        if spec not in made:
            log.info("teacher: %s (%s)", spec.describe(), "local" if spec.model else "served")
            made[spec] = (
                LocalTeacher(spec, init_kwargs, device, chunk_size, chat_template)
                if spec.model
                else ServedTeacher(spec, key)
            )
    return {key: made[spec] for key, spec in specs.items()}


def first_difference(a: list[int], b: list[int]) -> int | None:
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return None if n == len(a) == len(b) else n


def check_same_tokens(
    student_tokenizer: Any,
    teacher: Teacher,
    messages: list[dict[str, str]],
    completion: str,
    think_prefix: bool,
) -> None:
    """Refuse a teacher whose chat template or tokenizer gives other ids than the student's: it would score the
    student's ids under a prompt it was never trained on (a bias of tenths of a nat per token)."""
    _check_same_vocabulary(student_tokenizer, teacher)
    checks = (
        (
            "the rendered prompt",
            prompt_ids(student_tokenizer, messages, think_prefix),
            teacher.prompt_ids(messages, think_prefix),
        ),
        (
            "a completion",
            student_tokenizer.encode(completion, add_special_tokens=False),
            teacher.encode(completion),
        ),
    )
    for what, s_ids, t_ids in checks:
        _check_same_ids(student_tokenizer, teacher, what, s_ids, t_ids)


def _check_same_vocabulary(student_tokenizer: Any, teacher: Teacher) -> None:
    """Refuse a teacher with a tokenizer of its own (a local one) whose vocabulary is not the student's."""
    own = getattr(teacher, "tokenizer", None)
    if own is not None and own.get_vocab() != student_tokenizer.get_vocab():
        raise ConfigError(
            f"teacher {teacher.name}: its tokenizer's vocabulary differs from the student's: on-policy "
            "distillation compares both models on the student's token ids. For another tokenizer use TRL's "
            "GOLD trainer (trl.experimental.gold), or SFT on the teacher's text",
            key="teachers",
        )


def _check_same_ids(
    student_tokenizer: Any, teacher: Teacher, what: str, s_ids: list[int], t_ids: list[int]
) -> None:
    """Refuse when the student's and the teacher's ids for `what` differ, showing both from the first difference."""
    at = first_difference(s_ids, t_ids)
    if at is None:
        return

    def show(ids: list[int]) -> str:
        return f"{ids[at : at + 6]} {student_tokenizer.decode(ids[at : at + 6])!r}"

    raise ConfigError(
        f"teacher {teacher.name}: tokenises {what} differently from the student, from token {at} "
        f"(student {len(s_ids)} tokens, teacher {len(t_ids)}): student {show(s_ids)} vs teacher "
        f"{show(t_ids)}. Give both the same chat template (prompt.chat_template) and tokenizer, or for "
        "another tokenizer use TRL's GOLD trainer (trl.experimental.gold)",
        key="teachers",
    )
