"""The kd stage's trainer (pipeline/train/kd/stage.py runs it): logit-level distillation inside TRL's SFTTrainer.

`KDTrainer` is TRL's SFTTrainer with five overrides, TRL's own extension points (the TRL members it relies on
are listed and checked at start in pipeline/train/trl_internals.py): `_prepare_dataset` lays the
teacher's stored top-k out along each tokenized example (checking that the stored token ids are exactly the
student's tokens of the completion) before packing; `_set_signature_columns_if_needed` keeps those columns;
`compute_loss` computes `(1 - kd_weight) * CE + kd_weight * T^2 * divergence` over supervised tokens only, per
supervised token; `create_optimizer` adds the hidden-state projections (kd.hidden) with no weight decay; and
`training_step` averages those projections' gradients across processes (they live outside the DDP model).
Relation losses (kd.relations, pipeline/train/relations.py) and several teachers mixed per token (kd.teachers,
pipeline/train/kd/fusion.py) plug in beside these: the first after both forwards, the second as the teacher. The
student's logits are produced `chunk_size` positions at a time under activation checkpointing, so no
[tokens x vocab] tensor of either model ever exists for a whole batch. CE and KD are logged separately.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from pipeline.train.heads import output_transform
from pipeline.train.kd.config import KDSettings
from pipeline.train.kd.data import KDCollator, align_teacher
from pipeline.train.losses import dense_kd, hidden_loss, mix, topk_kd
from pipeline.train.trl_internals import KD_ATTRIBUTES, KD_METHODS, require_members

log = logging.getLogger("distill.kd")
TEACHER = ("teacher_topk_ids", "teacher_topk_logprobs")


class KDTrainer(SFTTrainer):
    def __init__(self, *args: Any, kd: KDSettings, teacher: Any = None, **kwargs: Any) -> None:
        require_members("KDTrainer", SFTTrainer, KD_METHODS)  # before any model loads
        self.kd, self.teacher = kd, teacher
        self.dropped: dict[str, int] = {}  # examples left out of KD, per reason (kd.data.align_teacher)
        self.projections: torch.nn.ModuleDict | None = None
        super().__init__(*args, **kwargs)
        require_members("KDTrainer", SFTTrainer, {}, KD_ATTRIBUTES, self)
        self.data_collator = KDCollator(self.data_collator)
        if teacher is not None:
            self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
            self.projections = self._projections() if kd.hidden.weight else None
            if self.projections is not None:
                self.add_callback(ZeroGradsOutside(self.projections))
        self.relations = None
        if teacher is not None and kd.relations.weight:  # kd.relations: pipeline/train/relations.py
            from pipeline.train.relations import Relations

            self.relations = Relations(kd.relations, self.model, self.teacher, kd.chunk_size)

    # --- data ----------------------------------------------------------------------------------------------

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        if "teacher_token_ids" not in (dataset.column_names or []) or dataset_name == "preflight":
            # the template check's one example needs TRL's rendering only, not the teacher's alignment
            return super()._prepare_dataset(
                dataset, processing_class, args, packing, formatting_func, dataset_name
            )
        from trl.data_utils import pack_dataset

        if self.kd.teachers:  # several stored teachers mixed per token (pipeline/train/kd/fusion.py)
            from pipeline.train.kd.fusion import fuse_stored

            dataset = fuse_stored(dataset, self.kd)
        tokenized = super()._prepare_dataset(
            dataset, processing_class, args, False, formatting_func, dataset_name
        )
        aligned, self.dropped = align_teacher(tokenized, args.max_length, processing_class)
        return pack_dataset(aligned, args.max_length, args.packing_strategy) if packing else aligned

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, *TEACHER]

    # --- loss ----------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        labels = inputs.pop("labels")
        stored = [inputs.pop(k, None) for k in TEACHER]
        if self.relations is not None:
            self.relations.arm()  # its hooks keep this step's q/k/v projections of both models
        out = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        mask = labels[:, 1:] != -100
        hidden = out.hidden_states[-1][:, :-1][mask]
        targets = labels[:, 1:][mask]
        t_hidden = None
        if self.teacher is not None:
            with torch.no_grad():
                t_out = self.teacher(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
            t_hidden = t_out.hidden_states[-1][:, :-1][mask]
        teacher_k = [t[:, 1:][mask] for t in stored] if stored[0] is not None else None
        ce_sum, kd_sum = self._chunked_losses(model, hidden, targets, teacher_k, t_hidden)
        denom = torch.as_tensor(num_items_in_batch if num_items_in_batch is not None else targets.numel())
        denom = denom.to(hidden.device).clamp(min=1)
        ce, kd_term = ce_sum / denom, kd_sum / denom
        loss = mix(ce, kd_term, self.kd.kd_weight)
        if self.projections is not None:
            h_loss = self._hidden_loss(out.hidden_states, t_out.hidden_states, labels != -100)
            loss = loss + self.kd.hidden.weight * h_loss
            self._metrics[mode]["hidden_loss"].append(
                self.accelerator.gather_for_metrics(h_loss.detach()).mean().item()
            )
        if self.relations is not None:
            r_loss = self.relations.loss(out.hidden_states, t_out.hidden_states, inputs)
            loss = loss + self.kd.relations.weight * r_loss
            self._metrics[mode]["relation_loss"].append(
                self.accelerator.gather_for_metrics(r_loss.detach()).mean().item()
            )
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as SFTTrainer.compute_loss
        for name, value in (("ce_loss", ce), ("kd_loss", kd_term)):
            scaled = value.detach() * (denom / max(targets.numel(), 1))  # per token of this micro-batch
            self._metrics[mode][name].append(self.accelerator.gather_for_metrics(scaled).mean().item())
        return (loss, out) if return_outputs else loss

    def _chunked_losses(
        self, model, hidden, targets, teacher_k, t_hidden
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sums of CE and KD over supervised positions, `chunk_size` positions of full-vocab logits at a time."""
        from torch.utils.checkpoint import checkpoint

        student = self.accelerator.unwrap_model(model)
        head = student.get_output_embeddings()
        t_head = self.teacher.get_output_embeddings() if self.teacher is not None else None
        vocab = head.weight.shape[0] if t_head is None else min(head.weight.shape[0], t_head.weight.shape[0])
        total = torch.zeros(2, device=hidden.device, dtype=torch.float32)
        for a in range(0, hidden.shape[0], self.kd.chunk_size):
            b = a + self.kd.chunk_size
            extra = [x[a:b] for x in teacher_k] if teacher_k is not None else [t_hidden[a:b]]
            total = total + checkpoint(
                self._chunk,
                head,
                student.config,
                t_head,
                vocab,
                hidden[a:b],
                targets[a:b],
                *extra,
                use_reentrant=False,
            )
        return total[0], total[1]

    def _chunk(self, head, s_config, t_head, vocab, h, y, *teacher) -> torch.Tensor:
        # a padded vocabulary (Qwen2.5 7B+: 152,064) is cut to the shared range
        logits = output_transform(s_config, head(h)[:, :vocab].float())

        ce = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        k = self.kd
        if t_head is not None:
            with torch.no_grad():
                t_logits = output_transform(self.teacher.config, t_head(teacher[0])[:, :vocab].float())

            kd_term = dense_kd(logits, t_logits, k.temperature, k.loss, k.beta).sum()
        else:
            ids, lps = teacher
            kd_term = topk_kd(
                logits, ids, lps, k.temperature, k.loss, k.beta, k.tail, valid=ids < vocab
            ).sum()
        return torch.stack([ce, kd_term])

    # --- feature distillation ------------------------------------------------------------------------------

    def _projections(self) -> torch.nn.ModuleDict:
        s_width = self.accelerator.unwrap_model(self.model).config.hidden_size
        t_width = self.teacher.config.hidden_size
        make = (
            (lambda: torch.nn.Linear(s_width, t_width, bias=False))
            if s_width != t_width
            else torch.nn.Identity
        )
        return torch.nn.ModuleDict({s: make() for s in self.kd.hidden.layers}).to(self.args.device)

    def _hidden_loss(self, s_states, t_states, mask) -> torch.Tensor:
        losses = [
            hidden_loss(self.projections[s](s_states[int(s)][mask]), t_states[t][mask], self.kd.hidden.loss)
            for s, t in self.kd.hidden.layers.items()
        ]
        return torch.stack([x.mean() for x in losses]).mean()

    def create_optimizer(self, *args: Any, **kwargs: Any):
        optimizer = super().create_optimizer(*args, **kwargs)
        params = list(self.projections.parameters()) if self.projections is not None else []
        if params:  # trained with the student; kept out of it, so never saved into its weights
            optimizer.add_param_group({"params": params, "weight_decay": 0.0})
        return optimizer

    def training_step(self, *args: Any, **kwargs: Any):
        loss = super().training_step(*args, **kwargs)
        if self.projections is not None and self.accelerator.num_processes > 1:
            # The projections live outside the DDP-wrapped student: average their gradients by hand. Averaging the
            # accumulated gradient at every micro-step is exact (the earlier part is already equal on all ranks).
            for p in self.projections.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.AVG)
        return loss


class ZeroGradsOutside(TrainerCallback):
    """The Trainer zeroes only its own model's gradients after each optimiser step (`model.zero_grad()`): a module
    trained beside it (kd.hidden's projections, mutual learning's peer) would pile its gradients up step after
    step, and a resumed run, starting from zero, would part from an uninterrupted one."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def on_optimizer_step(self, args, state, control, **kwargs) -> None:
        self.module.zero_grad(set_to_none=True)
