"""Distillation losses as pure functions (float32 inside), testable without a trainer.

Per position, with temperature T (teacher and student logprobs both divided by T before normalising):
  forward KL  KL(teacher || student) = sum_v p_t(v) (log p_t(v) - log p_s(v))
  reverse KL  KL(student || teacher)
  JSD(beta)   TRL's generalised JSD: beta * KL(p_t || m) + (1 - beta) * KL(p_s || m), m = beta p_t + (1 - beta) p_s;
              beta = 0 is forward KL and beta = 1 reverse KL exactly (the endpoints are special-cased, as in TRL)
and every divergence is multiplied by T^2 (Hinton et al. 2015: keeps gradient scale independent of T).

Top-k teachers give log p_t only on their k best tokens. The missing mass is handled explicitly:
  "renormalize": both distributions restricted to the teacher's k ids and renormalised there;
  "bucket":      a (k+1)-th outcome holds everything else: teacher 1 - sum(top-k), student the same over the
                 student's distribution. With T != 1 the teacher's tail is tempered as if it were one token (its
                 true tempered mass is unknown without the full distribution); at T = 1 it is exact.
The student's log-softmax needs its full vocabulary; callers pass it in chunks of positions (see kd/trainer.py).
"""

from __future__ import annotations

from typing import Literal

import torch

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
TAIL_FLOOR = -18.42  # log(1e-8)

Tail = Literal["renormalize", "bucket"]


def divergence(
    teacher_logp: torch.Tensor, student_logp: torch.Tensor, kind: Divergence, beta: float = 0.5
) -> torch.Tensor:
    """Per-position divergence between two normalised log-distributions over the same support [..., n]."""
    # -inf (masked ids) becomes -1e4: exp() is still exactly 0, but logsumexp and friends keep finite gradients
    t, s = teacher_logp.float().clamp(min=-1e4), student_logp.float().clamp(min=-1e4)

    if kind == "forward_kl" or (kind == "jsd" and beta == 0):
        return _kl(t, s)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1):
        return _kl(s, t)
    if kind != "jsd":
        raise ValueError(f"unknown divergence {kind!r}")
    m = torch.logsumexp(
        torch.stack([t + torch.log(torch.tensor(beta)), s + torch.log(torch.tensor(1 - beta))]), 0
    )
    return beta * _kl(t, m) + (1 - beta) * _kl(s, m)


def _kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    """KL(p || q) summed over the last axis; 0 * log 0 terms (p = 0) count as 0.

    Entries with p = 0 are replaced by zeros *before* any arithmetic: `torch.where` alone would still send
    the NaN gradient of `0 * (-inf)` through its unselected branch.
    """
    present = p_logp > float("-inf")
    zero = torch.zeros_like(p_logp)
    p_log = torch.where(present, p_logp, zero)
    q_log = torch.where(present, q_logp, zero)
    return torch.where(present, p_log.exp() * (p_log - q_log), zero).sum(-1)


def dense_kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    kind: Divergence = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-position KD loss [...] from full-vocabulary logits of both models (online teacher)."""
    t = torch.log_softmax(teacher_logits.float() / temperature, -1)
    s = torch.log_softmax(student_logits.float() / temperature, -1)
    return divergence(t, s, kind, beta) * temperature**2


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends, with finite gradients everywhere.

    x is kept below -1e-12 (a tail mass of at least ~1e-12, under the callers' 1e-8 floor), and each branch gets
    inputs inside its own range, so the branch `torch.where` does not select cannot produce an infinite or NaN
    gradient: a student sure of its top-k tokens (all mass on them) made the previous form NaN in training.
    """
    x = x.clamp(max=-1e-12)
    near = x.clamp(min=-0.693)  # log(-expm1(x)) is accurate near 0
    far = x.clamp(max=-0.693)  # log1p(-exp(x)) is accurate further out
    return torch.where(x > -0.693, torch.log(-torch.expm1(near)), torch.log1p(-torch.exp(far)))


def topk_kd(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    temperature: float = 1.0,
    kind: Divergence = "forward_kl",
    beta: float = 0.5,
    tail: Tail = "bucket",
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-position KD loss [N] from student logits [N, V] and the teacher's top-k ids / logprobs [N, k].

    `teacher_logprobs` are the teacher's logprobs at temperature 1 (what generate stores); `valid` [N, k]
    marks usable entries (ids inside the student's vocabulary); invalid ones join the tail.
    """
    T = temperature
    t_lp = teacher_logprobs.float()
    valid = torch.ones_like(t_lp, dtype=torch.bool) if valid is None else valid
    valid = valid & (t_lp > float("-inf"))  # absent entries (a fused target's spare slots) are not outcomes
    t_k, s_k = _at_teacher_ids(student_logits, teacher_ids, t_lp, valid, T)
    if tail == "renormalize":
        t_norm = t_k - torch.logsumexp(t_k, -1, keepdim=True)
        s_norm = s_k - torch.logsumexp(s_k, -1, keepdim=True)
        return divergence(t_norm, s_norm, kind, beta) * T**2
    if tail != "bucket":
        raise ValueError(f"unknown tail handling {tail!r}")
    t_all, s_all = _with_tail_bucket(t_lp, t_k, s_k, valid, T)
    return divergence(t_all, s_all, kind, beta) * T**2


def _at_teacher_ids(
    student_logits: torch.Tensor, teacher_ids: torch.Tensor, t_lp: torch.Tensor, valid: torch.Tensor, T: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student tempered logprobs at the teacher's top-k ids [N, k], -inf where not `valid`.

    The student's come from its full-vocabulary log-softmax; the teacher's are tempered, not yet normalised.
    """
    ids = torch.where(valid, teacher_ids, torch.zeros_like(teacher_ids)).long()
    neg_inf = torch.tensor(float("-inf"), device=t_lp.device)
    s_full = torch.log_softmax(student_logits.float() / T, -1)
    s_k = torch.where(valid, s_full.gather(-1, ids), neg_inf)  # student log p_s^T at the teacher's ids
    t_k = torch.where(valid, t_lp / T, neg_inf)  # tempered, not yet normalised
    return t_k, s_k


def _with_tail_bucket(
    t_lp: torch.Tensor, t_k: torch.Tensor, s_k: torch.Tensor, valid: torch.Tensor, T: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both distributions over k + 1 outcomes [N, k + 1]: the top-k ids, then the tail (all the other mass)."""
    neg_inf = torch.tensor(float("-inf"), device=t_lp.device)
    # Tails are floored at 1e-8 of mass: fp16-stored top-k can sum to >= 1, and a zero tail would make reverse
    # KL and JSD infinite; 1e-8 changes any loss by less than 1e-7.
    t_tail = (
        _log1mexp(torch.logsumexp(torch.where(valid, t_lp, neg_inf), -1, keepdim=True)).clamp(min=TAIL_FLOOR)
        / T
    )
    t_all = torch.cat([t_k, t_tail], -1)
    t_all = t_all - torch.logsumexp(t_all, -1, keepdim=True)
    s_tail = _log1mexp(torch.logsumexp(s_k, -1, keepdim=True)).clamp(min=TAIL_FLOOR)
    s_all = torch.cat([s_k, s_tail], -1)
    return t_all, s_all


def mix(ce: torch.Tensor, kd: torch.Tensor, kd_weight: float) -> torch.Tensor:
    """`(1 - kd_weight) * CE + kd_weight * KD`."""
    return (1 - kd_weight) * ce + kd_weight * kd


def hidden_loss(student: torch.Tensor, teacher: torch.Tensor, kind: Literal["mse", "cosine"]) -> torch.Tensor:
    """Per-position feature loss [N] between projected student and teacher hidden states [N, H]."""
    if kind == "mse":
        return (student.float() - teacher.float()).pow(2).mean(-1)
    return 1 - torch.nn.functional.cosine_similarity(student.float(), teacher.float(), dim=-1)


def sampled_reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """Per-token on-policy loss [N] on tokens x sampled from the student (temperature 1).

    Its value is the one-sample estimate of KL(p_s || p_t) at each position, log p_s(x) - log p_t(x); its gradient
    is `(log p_s(x) - log p_t(x)) * grad log p_s(x)`, the one-sample estimate of the gradient of that KL (the
    score-function identity: E_x~p_s[(log p_s(x) - log p_t(x)) grad log p_s(x)] = grad KL, as E[grad log p_s] = 0).
    This is tinker-cookbook's and Qwen3's on-policy distillation: a policy gradient whose per-token advantage is
    log p_t - log p_s, with no credit passed to later tokens.
    """
    s = student_logp.float()
    gap = (s - teacher_logp.float()).detach()
    return gap + gap * (s - s.detach())  # value: the KL estimate; gradient: gap * grad log p_s
