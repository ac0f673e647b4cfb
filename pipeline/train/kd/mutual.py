"""Deep Mutual Learning in the kd stage (Zhang et al. 2018): two students trained together on the same batches,
each towards the other's current distribution.

    kd: {kd_weight: 0, mutual: {peer: runs/demo/student-init, weight: 1.0}}    # recipes/demo/kd-mutual.yaml

Each student's loss is its own kd loss, `(1 - kd_weight) * CE + kd_weight * T^2 * D(teacher top-k)`, plus
`mutual.weight * KL(other || itself)` per supervised token, the other's distribution detached: the student
learns from the peer and the peer from the student, neither through the other's gradient. The two losses are
summed and take one backward: each student's weights get only its own loss's gradient. Both students' logits
exist `chunk_size` positions at a time, as in kd.

The peer is kept beside the student as kd.hidden's projections are (outside TRL's model, in the same optimizer
and schedule, its gradients averaged across processes by hand and clipped by `max_grad_norm` on their own); it
is saved into every checkpoint and the final model as `peer/` (with its own manifest in the final one), and
restored with a resumed checkpoint. Cost: two students' weights, gradients and optimiser states (2x the
student's memory) and two forwards and backwards a batch (2x its compute).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from trl import SFTTrainer

from pipeline.errors import UserError
from pipeline.train.heads import output_transform
from pipeline.train.kd.trainer import TEACHER, KDTrainer, ZeroGradsOutside
from pipeline.train.losses import dense_kd, mix, topk_kd
from pipeline.train.trl_internals import require_members

log = logging.getLogger("distill.kd")
PEER = "peer"
FIELD = "kd.mutual.peer"
MUTUAL_METHODS: dict[str, tuple[str, ...]] = {
    "_clip_grad_norm": ("model",),
    "_load_from_checkpoint": ("resume_from_checkpoint", "model"),
    "save_model": ("output_dir",),
    "get_decay_parameter_names": ("model",),
}
"""transformers.Trainer methods MutualKDTrainer overrides or calls -> their leading parameters."""
PARTS = ("ce_loss", "kd_loss", "mutual_loss", "peer_ce_loss", "peer_kd_loss", "peer_mutual_loss")


# --- the peer --------------------------------------------------------------------------------------------------


def check_peer(cfg: Any) -> None:
    """Before any weights load: the peer exists, shares the student's tokenizer, and a LoRA pair shares its base."""
    from pipeline import preflight

    peer = cfg.kd.mutual.peer
    preflight.check_model(peer, FIELD)
    adapter = Path(peer) / "adapter_config.json"
    if cfg.peft.method == "full" and adapter.is_file():
        raise UserError(
            f"{peer} is a LoRA adapter, and peft.method full trains two full models",
            field=FIELD,
            hint="give a model folder, or peft.method: lora for a LoRA pair on one base",
        )
    if cfg.peft.method != "full":
        base = json.loads(adapter.read_text()).get("base_model_name_or_path") if adapter.is_file() else peer
        if not _same_model(str(base), cfg.model):
            raise UserError(
                f"a LoRA pair must share its base: the peer's is {base}, the student's {cfg.model}",
                field=FIELD,
                hint=f"give the student's own model ({cfg.model}: the peer gets a second adapter on it) or an "
                "adapter trained on it; for a peer of another model train both in full (peft.method: full)",
            )
        return
    if _same_model(peer, cfg.model) and not cfg.from_scratch:
        raise UserError(
            f"the peer starts as the student ({peer}, the same weights) and sees the same batches: the two stay "
            "identical and teach each other nothing",
            field=FIELD,
            hint="give another model of the same tokenizer, train both from_scratch (the peer seeded apart), "
            "or a LoRA pair (peft.method: lora: two adapters drawn apart on one base)",
        )
    _check_same_tokenizer(cfg, peer)


def _same_model(a: str, b: str) -> bool:
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def _check_same_tokenizer(cfg: Any, peer: str) -> None:
    """The recipe's `tokenizer:` serves both students; without one, the peer's own must be the student's."""
    from transformers import AutoConfig, AutoTokenizer

    from pipeline.preflight import load_tokenizer

    student = load_tokenizer(cfg)
    if cfg.tokenizer:
        rows = AutoConfig.from_pretrained(peer).get_text_config().vocab_size
        if rows < len(student):
            raise UserError(
                f"the peer {peer} has {rows} token rows, the recipe's tokenizer {len(student)} ids",
                field=FIELD,
                hint="give a peer whose vocabulary holds the tokenizer's",
            )
        return
    try:
        vocab = AutoTokenizer.from_pretrained(peer).get_vocab()
    except (OSError, ValueError):
        raise UserError(
            f"{peer} has no tokenizer", field=FIELD, hint="save the tokenizer with the peer"
        ) from None
    if vocab != student.get_vocab():
        raise UserError(
            f"the peer {peer} uses another tokenizer than the student: the two learn from each other's "
            "distributions over the same token ids",
            field=FIELD,
            hint="give a peer with the student's tokenizer (another size of the same family works)",
        )


def load_peer(cfg: Any, seed: int, init_kwargs: dict[str, Any]) -> Any:
    """The peer model: loaded (or initialised from scratch with `seed`), with its own LoRA adapter under LoRA."""
    from trl.trainer.utils import create_model_from_path

    from pipeline.train.models import load_student

    peer_path = cfg.kd.mutual.peer
    adapter = Path(peer_path) / "adapter_config.json"
    if cfg.peft.method == "full":
        model = load_student(replace(cfg, model=peer_path, revision=None), seed, init_kwargs)
        return create_model_from_path(model, **init_kwargs) if isinstance(model, str) else model
    from peft import PeftModel, get_peft_model

    from pipeline.train.models import lora_config, model_config

    base = create_model_from_path(cfg.model, config=model_config(cfg), revision=cfg.revision, **init_kwargs)
    if adapter.is_file():
        return PeftModel.from_pretrained(base, peer_path, is_trainable=True)
    torch.manual_seed(seed)  # LoRA's A matrices: another draw than the student's adapter
    return get_peft_model(base, lora_config(cfg))


def build_mutual_trainer(cfg: Any) -> tuple[Any, Any]:
    """The kd trainer with a peer beside the student; the stored teacher columns only when KD reads them."""
    from trl import SFTConfig

    from pipeline.train.data import TEACHER_COLUMNS, TRAIN_COLUMNS
    from pipeline.train.sft.stage import build_trainer

    args = SFTConfig(**cfg.sft_config_kwargs())
    seed = cfg.kd.mutual.seed if cfg.kd.mutual.seed is not None else args.seed + 1
    peer = load_peer(cfg, seed, dict(args.model_init_kwargs or {}))
    stored = cfg.kd.teacher == "offline" and cfg.kd.kd_weight > 0
    columns = TRAIN_COLUMNS + (TEACHER_COLUMNS if stored else ())
    return build_trainer(
        cfg, MutualKDTrainer, columns=columns, kd=cfg.kd, peer=peer, peer_config=peer_config(cfg)
    )


# --- the trainer -----------------------------------------------------------------------------------------------


class MutualKDTrainer(KDTrainer):
    def __init__(
        self, *args: Any, peer: Any, peer_config: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        require_members("MutualKDTrainer", SFTTrainer, MUTUAL_METHODS)
        super().__init__(*args, **kwargs)
        self.peer = peer.to(self.args.device)
        self.peer_config = peer_config  # the peer's recipe, as its manifest states it
        self.add_callback(ZeroGradsOutside(self.peer))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        labels = inputs.pop("labels")
        stored = [inputs.pop(k, None) for k in TEACHER]
        self.peer.train(self.model.training)
        out = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        peer_out = self.peer(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        mask = labels[:, 1:] != -100
        h, hp = (o.hidden_states[-1][:, :-1][mask] for o in (out, peer_out))
        targets = labels[:, 1:][mask]
        teacher_k = [t[:, 1:][mask] for t in stored] if stored[0] is not None else []
        sums = self._mutual_sums(model, h, hp, targets, teacher_k)
        denom = torch.as_tensor(num_items_in_batch if num_items_in_batch is not None else targets.numel())
        parts = sums / denom.to(h.device).clamp(min=1)
        k, m = self.kd, self.kd.mutual.weight
        loss = mix(parts[0], parts[1], k.kd_weight) + m * parts[2]  # the student's
        loss = loss + mix(parts[3], parts[4], k.kd_weight) + m * parts[5]  # the peer's
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as SFTTrainer.compute_loss
        scale = denom.to(h.device) / max(targets.numel(), 1)  # per token of this micro-batch
        logged = self.accelerator.gather_for_metrics((parts.detach() * scale)[None]).mean(0)
        for i, name in enumerate(PARTS):
            if teacher_k or "kd" not in name:
                self._metrics[mode][name].append(logged[i].item())
        return (loss, out) if return_outputs else loss

    def _mutual_sums(self, model, h, hp, targets, teacher_k) -> torch.Tensor:
        """Sums over supervised positions of PARTS, `chunk_size` positions of both models' logits at a time."""
        from torch.utils.checkpoint import checkpoint

        student = self.accelerator.unwrap_model(model)
        heads = (student.get_output_embeddings(), self.peer.get_output_embeddings())
        vocab = min(x.weight.shape[0] for x in heads)  # a vocabulary padded to another size: the shared range
        configs = (student.config, self.peer.config)
        total = torch.zeros(len(PARTS), device=h.device, dtype=torch.float32)
        for a in range(0, h.shape[0], self.kd.chunk_size):
            b = a + self.kd.chunk_size
            chunk = (h[a:b], hp[a:b], targets[a:b], *(x[a:b] for x in teacher_k))
            total = total + checkpoint(self._chunk_pair, heads, configs, vocab, *chunk, use_reentrant=False)
        return total

    def _chunk_pair(self, heads, configs, vocab, h, hp, y, *teacher) -> torch.Tensor:
        s = output_transform(configs[0], heads[0](h)[:, :vocab].float())
        p = output_transform(configs[1], heads[1](hp)[:, :vocab].float())
        f = torch.nn.functional.cross_entropy
        k = self.kd
        if teacher:
            ids, lps = teacher
            kd_s, kd_p = (
                topk_kd(x, ids, lps, k.temperature, k.loss, k.beta, k.tail, valid=ids < vocab).sum()
                for x in (s, p)
            )
        else:
            kd_s = kd_p = torch.zeros((), device=h.device)
        ml_s = dense_kd(
            s, p.detach()
        ).sum()  # KL(peer || student): the peer is the student's target, and back
        ml_p = dense_kd(p, s.detach()).sum()
        return torch.stack([f(s, y, reduction="sum"), kd_s, ml_s, f(p, y, reduction="sum"), kd_p, ml_p])

    # --- the peer's optimisation, saving and resuming ---------------------------------------------------------

    def create_optimizer(self, *args: Any, **kwargs: Any):
        optimizer = super().create_optimizer(*args, **kwargs)
        decay = set(self.get_decay_parameter_names(self.peer))
        named = [(n, p) for n, p in self.peer.named_parameters() if p.requires_grad]
        for wd, group in ((self.args.weight_decay, True), (0.0, False)):
            params = [p for n, p in named if (n in decay) == group]
            if params:  # the student's own groups' settings: one schedule for both
                optimizer.add_param_group({"params": params, "weight_decay": wd})
        return optimizer

    def training_step(self, *args: Any, **kwargs: Any):
        loss = super().training_step(*args, **kwargs)
        if self.accelerator.num_processes > 1:  # the peer lives outside the DDP-wrapped student
            for p in self.peer.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.AVG)
        return loss

    def _clip_grad_norm(self, model):
        norm = super()._clip_grad_norm(model)
        torch.nn.utils.clip_grad_norm_(
            [p for p in self.peer.parameters() if p.grad is not None], self.args.max_grad_norm
        )
        return norm

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if not self.is_world_process_zero():
            return
        folder = Path(output_dir or self.args.output_dir) / PEER
        self.peer.save_pretrained(folder)
        self.processing_class.save_pretrained(folder)
        if folder.parent == Path(self.args.output_dir) and self.peer_config is not None:
            # the final save (checkpoints are saved into checkpoint-N/): the peer's folder is complete before the
            # student's, whose manifest the stage writes after this
            write_peer_manifest(folder, self.peer_config, self.state.global_step, self.state.log_history)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_weights(self.peer, Path(resume_from_checkpoint) / PEER)
        log.info("peer restored from %s", Path(resume_from_checkpoint) / PEER)


def load_weights(model: Any, folder: Path) -> None:
    """The weights `save_pretrained` wrote in `folder`, loaded into `model` in place (a full model or an adapter)."""
    from safetensors.torch import load_file

    if (folder / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
        return
    if (folder / "model.safetensors.index.json").is_file():
        from transformers.trainer_utils import load_sharded_checkpoint

        load_sharded_checkpoint(model, str(folder), strict=False)
        return
    result = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    tied = {"lm_head.weight"} if model.config.get_text_config().tie_word_embeddings else set()
    if result.unexpected_keys or set(result.missing_keys) - tied:
        raise RuntimeError(f"{folder}: the saved peer does not fit the peer model: {result}")


def peer_config(cfg: Any) -> dict[str, Any]:
    """The peer's recipe as its manifest states it: the student's, with the two models' places swapped."""
    from pipeline.config import to_dict

    config = to_dict(cfg)
    config["kd"]["mutual"]["peer"] = cfg.model
    config["model"], config["revision"] = cfg.kd.mutual.peer, None
    config["output"] = str(Path(cfg.output) / PEER)
    return config


def write_peer_manifest(
    folder: Path, config: dict[str, Any], step: int, history: list[dict[str, Any]]
) -> None:
    """The peer's manifest: a kd model like the student, its losses the peer_* ones the student's run logged."""
    from pipeline.records.manifest import write_manifest

    last = {
        f"final_{key.removeprefix('peer_')}": values[-1]
        for key in ("peer_ce_loss", "peer_kd_loss", "peer_mutual_loss")
        if (values := [e[key] for e in history if key in e])
    }
    write_manifest(
        folder,
        "kd",
        config,
        inputs=[d.get("path") or f"hub:{d.get('hub')}" for d in config["data"]],
        counts={"global_step": step, **last},
        mutual_with=config["kd"]["mutual"]["peer"],
        method=config["peft"]["method"],
    )
