"""`OPDTrainer`: TRL's `DistillationTrainer` (on-policy: the student samples, then learns) with its teacher side
made pluggable. TRL's loop, sampling (transformers or `use_vllm`), batching, accumulation and checkpointing are
used as they are; five of its extension points are overridden:

- `_tokenize_prompts`: prompts become token ids exactly as `generate` and `eval` make them
  (`pipeline.prompts.prompt_ids`, `prompt.think_prefix` included), so the student is prompted as in SFT and eval;
- `_generate`: times the rollouts and keeps their token ids for the teachers;
- `_generate_and_score_completions`: after TRL has sampled the batch, each rollout goes to the teacher its problem's
  `source` is routed to (a local model or a served `vllm serve`), which scores every token (its log-probability
  and its top-k); rollouts of problems with a gold answer are graded with the filter's math verifier;
- `_compute_loss`: the per-token reverse KL on the sampled tokens, or the generalised JSD over the teacher's top-k
  (with a tail outcome); the generalised JSD over the full vocabulary of one local teacher is TRL's own loss;
- `training_step`: seconds in rollouts, teacher scoring and optimisation; `_generate_and_score_completions` also
  logs cumulative teacher tokens and distinct problems, summed and united over every accelerate process.
TRL's trainer alone takes only one local teacher with the student's exact vocabulary size, scores nothing but the
full distribution, and cannot reach a teacher on other machines: those are the reasons for the subclass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from trl import DistillationTrainer

from pipeline.train.losses import sampled_reverse_kl, topk_kd
from pipeline.train.opd.config import OPDSettings
from pipeline.train.opd.privileged import teacher_prompt_ids
from pipeline.train.opd.scores import TokenScores
from pipeline.train.opd.teachers import Teacher
from pipeline.train.trl_internals import OPD_ATTRIBUTES, OPD_METHODS, require_members

log = logging.getLogger("distill.opd")
SCORES = ("teacher_logprob", "teacher_topk_ids", "teacher_topk_logprobs")


class OPDCosts(TrainerCallback, ExportableState):
    """The run's teacher tokens scored and distinct problems seen (every process's), saved in each checkpoint's
    trainer_state.json and restored on resume, so a resumed run's manifest counts the whole run."""

    def __init__(self, tokens: int = 0, problems: list[str] | None = None) -> None:
        self.tokens, self.problems = tokens, set(problems or ())

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"tokens": self.tokens, "problems": sorted(self.problems)}}

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        saved = (state.stateful_callbacks or {}).get(
            type(self).__name__
        )  # a resumed checkpoint's, else our own
        if isinstance(saved, dict):
            self.tokens = saved["attributes"]["tokens"]
            self.problems = set(saved["attributes"]["problems"])


class OPDTrainer(DistillationTrainer):
    def __init__(
        self,
        *args: Any,
        opd: OPDSettings,
        teachers: dict[str, Teacher],
        route: Callable[[str], str],
        think_prefix: bool = False,
        **kwargs: Any,
    ) -> None:
        require_members("OPDTrainer", DistillationTrainer, OPD_METHODS)  # before any model loads
        self.opd, self.teachers, self.route, self.think_prefix = opd, teachers, route, think_prefix
        self.full = opd.loss == "jsd" and opd.support == "full"
        teacher_model = next(iter(teachers.values())).model if self.full else None
        if self.full:  # TRL refuses init kwargs for a teacher passed loaded; ours was loaded with them
            kwargs["args"].teacher_model_init_kwargs = None
        super().__init__(*args, teacher_model=teacher_model, **kwargs)
        require_members("OPDTrainer", DistillationTrainer, {}, OPD_ATTRIBUTES, self)
        self._rollouts: tuple[list[list[int]], list[list[int]]] | None = None
        self._seconds = {"rollout": 0.0, "teacher": 0.0}
        self._step_seconds: dict[str, float] = {}
        self.costs = OPDCosts()
        self.add_callback(self.costs)

    # --- rollouts ------------------------------------------------------------------------------------------

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict]:
        from pipeline.prompts import prompt_ids

        return [prompt_ids(self._tokenizer, p, self.think_prefix) for p in prompts], None, {}

    def _generate(self, prompts: list):
        started = time.perf_counter()
        result = super()._generate(prompts)
        self._seconds["rollout"] += time.perf_counter() - started
        self._rollouts = (result[0], result[1])  # prompt ids, completion ids (unpadded, in input order)
        return result

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        prompts, completions = self._rollouts
        # a privileged teacher reads a longer prompt before the same completion ids (opd/privileged.py)
        teacher_of = lambda x: self.teachers[self.route(x.get("source") or "")]  # noqa: E731
        prompts = teacher_prompt_ids(inputs, prompts, teacher_of, self.think_prefix)
        started = time.perf_counter()
        scores = self._score(
            [x.get("source") or "" for x in inputs], list(zip(prompts, completions, strict=True))
        )
        self._seconds["teacher"] += time.perf_counter() - started
        output.update(self._pad_scores(scores, output["completion_ids"].shape[1]))
        mode = "train" if self.model.training else "eval"
        # every process's rollouts, so the costs and the accuracy count the whole batch, not the main process's share
        everyone = self._from_every_process(
            [str(x.get("id")) for x in inputs],
            sum(len(c) for c in completions),
            self._grade(inputs, completions),
        )
        if mode == "train":
            self.costs.problems.update(i for ids, _, _ in everyone for i in ids)
            # the tokens it judged: each rollout's completion (the prompt is context, prefilled as SFT's teacher
            # prefilled it to generate a trace)
            self.costs.tokens += sum(tokens for _, tokens, _ in everyone)
        self._metrics[mode]["opd/teacher_tokens"] = [float(self.costs.tokens)]
        self._metrics[mode]["opd/problems_seen"] = [float(len(self.costs.problems))]
        right, graded = sum(g[0] for *_, g in everyone), sum(g[1] for *_, g in everyone)
        if graded:
            self._metrics[mode]["opd/correct"].append(right / graded)
        return output

    def _from_every_process(self, ids: list[str], tokens: int, grades: tuple[int, int]) -> list[tuple]:
        """(problem ids, teacher tokens, (right, graded)) of this step's rollouts on every process, in rank order."""
        from accelerate.utils import gather_object

        mine = (ids, tokens, grades)
        return gather_object([mine]) if self.accelerator.num_processes > 1 else [mine]

    def _score(self, sources: list[str], sequences: list[tuple[list[int], list[int]]]) -> list[TokenScores]:
        """Each sequence scored by the teacher its source is routed to; results back in input order."""
        groups: dict[int, list[int]] = {}
        keys = [self.route(s) for s in sources]
        for i, key in enumerate(keys):
            groups.setdefault(id(self.teachers[key]), []).append(i)
        scores: list[TokenScores | None] = [None] * len(sequences)
        for members in groups.values():
            teacher = self.teachers[keys[members[0]]]
            for i, s in zip(
                members, teacher.score([sequences[i] for i in members], self.opd.topk), strict=True
            ):
                scores[i] = s
        return scores

    def _pad_scores(self, scores: list[TokenScores], width: int) -> dict[str, torch.Tensor]:
        """[B, C] / [B, C, k] tensors aligned with TRL's right-padded completion ids."""
        b, k = len(scores), self.opd.topk
        own = torch.zeros(b, width)
        ids = torch.zeros(b, width, k, dtype=torch.long)
        lps = torch.full((b, width, k), float("-inf"))
        for i, s in enumerate(scores):
            n = s.logprob.shape[0]
            own[i, :n], ids[i, :n], lps[i, :n] = s.logprob, s.topk_ids.long(), s.topk_logprobs.float()
        device = self.accelerator.device
        return {name: t.to(device) for name, t in zip(SCORES, (own, ids, lps), strict=True)}

    def _grade(self, inputs: list[dict[str, Any]], completions: list[list[int]]) -> tuple[int, int]:
        """(rollouts the math verifier marks correct, rollouts whose problem has a gold answer)."""
        from pipeline.filter.math_grader import grade
        from pipeline.filter.parse import gradable_text

        graded = [
            grade(
                gradable_text(self._tokenizer.decode(c, skip_special_tokens=True)), str(x["answer"])
            ).correct
            for x, c in zip(inputs, completions, strict=True)
            if x.get("answer") not in (None, "")
        ]
        return sum(bool(v) for v in graded), len(graded)

    # --- loss ----------------------------------------------------------------------------------------------

    def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
        if self.full:  # TRL's chunked generalised JSD against the (single, local) teacher's full distribution
            loss, entropy, n = super()._compute_loss(unwrapped_student, inputs, num_items_in_batch)
            self._log_reverse_kl(unwrapped_student, inputs)
            return loss, entropy, n
        hidden, mask = self._completion_hidden(unwrapped_student, inputs)
        total, kl, entropy = self._chunked(unwrapped_student, hidden, inputs, mask)
        n = mask.sum()
        denom = num_items_in_batch if num_items_in_batch is not None else n.clamp(min=1)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["opd/reverse_kl"].append((kl / n.clamp(min=1)).item())
        return total / denom, entropy, n

    def _completion_hidden(self, student, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's last hidden state at each completion position [N, H] (TRL's backbone call), and the mask."""
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        width = inputs["completion_ids"].size(1)
        mask = inputs["completion_mask"].bool()
        return self._get_last_hidden_state(student, input_ids, attention_mask, width)[mask], mask

    def _chunked(self, student, h, inputs, mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sums over completion tokens of the loss, the sampled-token reverse KL and the student's entropy,
        `chunk_size` positions of full-vocabulary logits at a time (recomputed in backward)."""
        from torch.utils.checkpoint import checkpoint

        flat = [inputs["completion_ids"][mask], *(inputs[s][mask] for s in SCORES)]
        head = student.get_output_embeddings()
        sums = torch.zeros(3, device=h.device)
        for a in range(0, h.shape[0], self.opd.chunk_size):
            part = [x[a : a + self.opd.chunk_size] for x in flat]
            sums = sums + checkpoint(
                self._chunk, head, student.config, h[a : a + self.opd.chunk_size], *part, use_reentrant=False
            )
        return sums[0], sums[1].detach(), sums[2].detach()

    def _chunk(self, head, config, h, sampled, t_own, t_ids, t_lps) -> torch.Tensor:
        from pipeline.train.heads import output_transform

        logits = output_transform(config, head(h).float())
        s_logp = torch.log_softmax(logits / self.temperature, -1)
        s_own = s_logp.gather(-1, sampled[:, None])[:, 0]
        if self.opd.loss == "sampled_reverse_kl":
            loss = sampled_reverse_kl(s_own, t_own)
        else:
            vocab = logits.shape[-1]
            loss = topk_kd(
                logits, t_ids, t_lps, self.temperature, "jsd", self.beta, self.opd.tail, valid=t_ids < vocab
            )
        entropy = -(s_logp.exp() * s_logp).sum(-1)
        return torch.stack([loss.sum(), (s_own - t_own).detach().sum(), entropy.detach().sum()])

    @torch.no_grad()
    def _log_reverse_kl(self, student, inputs) -> None:
        """The sampled-token reverse KL for the log, when TRL's own loss trained the step."""
        hidden, mask = self._completion_hidden(student, inputs)
        _, kl, _ = self._chunked(student, hidden, inputs, mask)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["opd/reverse_kl"].append((kl / mask.sum().clamp(min=1)).item())

    # --- time accounting -----------------------------------------------------------------------------------

    def training_step(self, model, inputs, num_items_in_batch):
        started = time.perf_counter()
        before = dict(self._seconds)
        loss = super().training_step(
            model, inputs, num_items_in_batch
        )  # TRL counts micro-steps in self._step
        spent = {k: self._seconds[k] - before[k] for k in self._seconds}
        spent["optim"] = time.perf_counter() - started - spent["rollout"] - spent["teacher"]
        for key, value in spent.items():
            self._step_seconds[key] = self._step_seconds.get(key, 0.0) + value
        if self._step % self.current_gradient_accumulation_steps == 0:  # one optimiser step: log its sums
            for key, value in self._step_seconds.items():
                self._metrics["train"][f"time/{key}_s"].append(value)
            self._step_seconds = {}
        return loss
