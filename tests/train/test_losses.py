"""Distillation losses against an independent float64 reference (numpy), on random logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.train.losses import dense_kd, divergence, hidden_loss, mix, topk_kd

RNG = np.random.default_rng(0)


def log_softmax64(x: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = x / t
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kl64(p_log: np.ndarray, q_log: np.ndarray) -> np.ndarray:
    p = np.exp(p_log)
    return (p * (p_log - q_log)).sum(-1)


def jsd64(t_log: np.ndarray, s_log: np.ndarray, beta: float) -> np.ndarray:
    m = np.log(beta * np.exp(t_log) + (1 - beta) * np.exp(s_log))
    return beta * kl64(t_log, m) + (1 - beta) * kl64(s_log, m)


def reference(teacher: np.ndarray, student: np.ndarray, kind: str, t: float, beta: float = 0.5) -> np.ndarray:
    tl, sl = log_softmax64(teacher, t), log_softmax64(student, t)
    value = {"forward_kl": kl64(tl, sl), "reverse_kl": kl64(sl, tl), "jsd": jsd64(tl, sl, beta)}[kind]
    return value * t * t


@pytest.fixture
def logits() -> tuple[np.ndarray, np.ndarray]:
    return RNG.normal(size=(12, 50)) * 3, RNG.normal(size=(12, 50)) * 3


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_dense_losses_match_the_float64_reference(logits, kind, temperature):
    teacher, student = logits
    got = dense_kd(
        torch.tensor(student, dtype=torch.float32),
        torch.tensor(teacher, dtype=torch.float32),
        temperature,
        kind,
        beta=0.3,
    )
    np.testing.assert_allclose(
        got.numpy(), reference(teacher, student, kind, temperature, 0.3), rtol=2e-4, atol=1e-5
    )


def test_kl_of_a_distribution_with_itself_is_zero(logits):
    x = torch.tensor(logits[0], dtype=torch.float32)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert dense_kd(x, x, 1.5, kind).abs().max() < 1e-6
    lp = torch.log_softmax(x, -1)
    top = lp.topk(5, -1)
    assert topk_kd(x, top.indices, top.values, 1.0, "forward_kl", tail="bucket").abs().max() < 1e-5
    assert topk_kd(x, top.indices, top.values, 1.0, "reverse_kl", tail="renormalize").abs().max() < 1e-5


def test_jsd_endpoints_are_forward_and_reverse_kl(logits):
    t, s = (torch.log_softmax(torch.tensor(x, dtype=torch.float32), -1) for x in logits)
    assert torch.allclose(divergence(t, s, "jsd", beta=0.0), divergence(t, s, "forward_kl"))
    assert torch.allclose(divergence(t, s, "jsd", beta=1.0), divergence(t, s, "reverse_kl"))
    mid = divergence(t, s, "jsd", beta=0.5).numpy()
    np.testing.assert_allclose(mid, jsd64(t.double().numpy(), s.double().numpy(), 0.5), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
def test_top_k_with_k_equal_to_the_vocabulary_is_the_dense_loss(logits, kind, tail):
    teacher, student = (torch.tensor(x, dtype=torch.float32) for x in logits)
    t_lp = torch.log_softmax(teacher, -1)
    ids = torch.arange(50).expand(12, 50)
    got = topk_kd(student, ids, t_lp, 1.0, kind, beta=0.4, tail=tail)
    np.testing.assert_allclose(
        got.numpy(), dense_kd(student, teacher, 1.0, kind, beta=0.4).numpy(), rtol=1e-3, atol=1e-5
    )


def test_temperature_scales_by_t_squared(logits):
    teacher, student = (torch.tensor(x, dtype=torch.float32) for x in logits)
    at2 = dense_kd(student, teacher, 2.0).numpy()
    plain = (
        reference(logits[0], logits[1], "forward_kl", 2.0) / 4
    )  # the divergence of the softened distributions
    np.testing.assert_allclose(at2, 4 * plain, rtol=2e-4, atol=1e-6)


def test_top_k_bucket_against_reference(logits):
    """Top-5 with a tail bucket, computed independently: the (k+1)-outcome distributions of both models."""
    teacher, student = logits
    t_log, s_log = log_softmax64(teacher), log_softmax64(student)
    idx = np.argsort(-t_log, -1)[:, :5]
    t_k, s_k = np.take_along_axis(t_log, idx, -1), np.take_along_axis(s_log, idx, -1)
    t_all = np.concatenate([t_k, np.log1p(-np.exp(t_k).sum(-1, keepdims=True))], -1)
    s_all = np.concatenate([s_k, np.log1p(-np.exp(s_k).sum(-1, keepdims=True))], -1)
    got = topk_kd(
        torch.tensor(student, dtype=torch.float32),
        torch.tensor(idx),
        torch.tensor(t_k, dtype=torch.float32),
        1.0,
        "forward_kl",
        tail="bucket",
    )
    np.testing.assert_allclose(got.numpy(), kl64(t_all, s_all), rtol=1e-4, atol=1e-6)
    renorm = topk_kd(
        torch.tensor(student, dtype=torch.float32),
        torch.tensor(idx),
        torch.tensor(t_k, dtype=torch.float32),
        1.0,
        "forward_kl",
        tail="renormalize",
    )
    t_r = t_k - np.log(np.exp(t_k).sum(-1, keepdims=True))
    s_r = s_k - np.log(np.exp(s_k).sum(-1, keepdims=True))
    np.testing.assert_allclose(renorm.numpy(), kl64(t_r, s_r), rtol=1e-4, atol=1e-6)


def test_ids_outside_the_students_vocabulary_join_the_tail(logits):
    teacher, student = (torch.tensor(x, dtype=torch.float32) for x in logits)
    t_lp = torch.log_softmax(teacher, -1)
    top = t_lp.topk(4, -1)
    ids = top.indices.clone()
    ids[:, 3] = 99  # a padded-vocabulary id the student does not have
    valid = ids < 50
    got = topk_kd(student, ids, top.values, 1.0, tail="bucket", valid=valid)
    ref = topk_kd(student, top.indices[:, :3], top.values[:, :3], 1.0, tail="bucket")
    assert torch.allclose(got, ref, atol=1e-6) and torch.isfinite(got).all()


def test_mix_and_hidden_losses():
    assert mix(torch.tensor(2.0), torch.tensor(4.0), 0.25) == pytest.approx(2.5)
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    np.testing.assert_allclose(hidden_loss(a, b, "mse").numpy(), ((a - b) ** 2).mean(-1).numpy(), rtol=1e-6)
    assert hidden_loss(a, a * 3, "cosine").abs().max() < 1e-6


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
def test_gradients_stay_finite_when_the_student_is_certain(kind, tail):
    """A student that puts all its mass on the teacher's top-k (late in training) once made KD NaN."""
    student = torch.full((4, 50), -30.0)
    student[:, 0] = 30.0  # softmax mass on token 0 is 1 - 1e-26: the tail underflows to exactly 0
    student.requires_grad_(True)
    ids = torch.tensor([[0, 1, 2]] * 4)
    lps = torch.log_softmax(torch.tensor([[5.0, 1.0, 0.0]] * 4), -1)
    valid = torch.tensor([[True, True, False]] * 4)  # an id outside the student's vocabulary, masked
    loss = topk_kd(student, ids, lps, 1.0, kind, beta=0.5, tail=tail, valid=valid).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


# --- on-policy distillation -----------------------------------------------------------------------------


def reverse_kl_grad64(z: np.ndarray, t_log: np.ndarray) -> np.ndarray:
    """d/dz KL(softmax(z) || p_t) in closed form: p_s * (g - sum(p_s * g)), g = log p_s - log p_t."""
    s_log = log_softmax64(z)
    p, g = np.exp(s_log), s_log - t_log
    return p * (g - (p * g).sum(-1, keepdims=True))


def test_sampled_reverse_kl_is_an_unbiased_estimate_of_the_reverse_kl_and_its_gradient():
    from pipeline.train.losses import sampled_reverse_kl

    z64, t64 = RNG.normal(size=(4, 9)) * 2, log_softmax64(RNG.normal(size=(4, 9)) * 2)
    z = torch.tensor(z64, requires_grad=True)
    s_logp = torch.log_softmax(z, -1)
    # every token x of the vocabulary, weighted by the probability that the student samples it
    per_token = sampled_reverse_kl(s_logp, torch.tensor(t64))
    expected = (s_logp.exp().detach() * per_token).sum(-1)
    expected.sum().backward()
    assert np.allclose(expected.detach().numpy(), kl64(log_softmax64(z64), t64), atol=1e-9)
    assert np.allclose(z.grad.numpy(), reverse_kl_grad64(z64, t64), atol=1e-9)


def opd_chunk(loss: str, temperature: float = 1.0, beta: float = 0.5, topk: int = 6) -> object:
    """OPDTrainer._chunk bound to the few attributes it reads (no trainer, no model)."""
    from types import SimpleNamespace

    from pipeline.train.opd.config import OPDSettings
    from pipeline.train.opd.trainer import OPDTrainer

    ns = SimpleNamespace(
        # renormalize is exact when the teacher gives every token (bucket tempers its 1e-8 floor as one token)
        opd=OPDSettings(loss=loss, topk=topk, tail="renormalize"),
        temperature=temperature,
        beta=beta,
    )
    return lambda *args: OPDTrainer._chunk(ns, *args)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_opd_jsd_over_the_teachers_whole_distribution_matches_the_reference(beta, temperature):
    n, v, h = 5, 6, 4
    hidden, weight = RNG.normal(size=(n, h)), RNG.normal(size=(v, h))
    teacher = RNG.normal(size=(n, v)) * 2
    t_log = log_softmax64(teacher)  # stored at temperature 1, as teachers return them
    order = np.argsort(-t_log, -1)
    head = torch.nn.Linear(h, v, bias=False).double()
    head.weight.data = torch.tensor(weight)
    config = SimpleConfig()
    sampled = torch.tensor(RNG.integers(0, v, size=n))
    out = opd_chunk("jsd", temperature, beta, topk=v)(
        head,
        config,
        torch.tensor(hidden),
        sampled,
        torch.tensor(t_log[np.arange(n), sampled.numpy()]),
        torch.tensor(order),
        torch.tensor(np.take_along_axis(t_log, order, -1)),
    )
    # TRL's generalised JSD: its endpoints are forward KL (beta 0) and reverse KL (beta 1)
    kind = {0.0: "forward_kl", 1.0: "reverse_kl"}.get(beta, "jsd")
    want = reference(teacher, hidden @ weight.T, kind, temperature, beta).sum()
    assert abs(out[0].item() - want) < 1e-5 * max(1.0, abs(want))


def test_opd_sampled_loss_sums_the_per_token_reverse_kl_of_the_sampled_tokens():
    n, v, h = 7, 5, 3
    hidden, weight = RNG.normal(size=(n, h)), RNG.normal(size=(v, h))
    t_log = log_softmax64(RNG.normal(size=(n, v)))
    head = torch.nn.Linear(h, v, bias=False).double()
    head.weight.data = torch.tensor(weight)
    sampled = RNG.integers(0, v, size=n)
    t_own = t_log[np.arange(n), sampled]
    ids = torch.zeros(n, 2, dtype=torch.long)
    out = opd_chunk("sampled_reverse_kl", topk=2)(
        head,
        SimpleConfig(),
        torch.tensor(hidden),
        torch.tensor(sampled),
        torch.tensor(t_own),
        ids,
        torch.zeros(n, 2),
    )
    s_log = log_softmax64(hidden @ weight.T)
    gap = (s_log[np.arange(n), sampled] - t_own).sum()
    assert abs(out[0].item() - gap) < 1e-6 and abs(out[1].item() - gap) < 1e-6
    assert abs(out[2].item() - (-(np.exp(s_log) * s_log).sum())) < 1e-6  # the student's entropy, for the log


class SimpleConfig:
    """A model config with no logit scale or soft-capping."""
