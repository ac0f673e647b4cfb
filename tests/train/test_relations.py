"""Relation losses against direct numpy loops over positions (causal, per packed sequence, padding left out)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.train.relations import attention_relation_loss, gram_relation_loss, segments


def batch() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Two rows of 9 positions: the first packs sequences of 4 and 5, the second holds 6 and 3 of padding."""
    position_ids = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 0, 0, 0]])
    attention = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    inputs = {"input_ids": torch.zeros(2, 9, dtype=torch.long), "position_ids": position_ids}
    inputs["attention_mask"] = attention
    return inputs, segments(inputs)


def allowed_pairs(seg: np.ndarray) -> list[tuple[int, int, list[int]]]:
    """(row, query position, the positions it relates to) by the definition: same sequence, j <= i, no padding."""
    out = []
    for b in range(seg.shape[0]):
        for i in range(seg.shape[1]):
            if seg[b, i] >= 0:
                out.append((b, i, [j for j in range(i + 1) if seg[b, j] == seg[b, i]]))
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def reference_attention(s: np.ndarray, t: np.ndarray, seg: np.ndarray, heads: int) -> float:
    kls = []
    for b, i, cols in allowed_pairs(seg):
        for r in range(heads):
            ds, dt = s.shape[-1] // heads, t.shape[-1] // heads
            xs, xt = s[b, :, r * ds : (r + 1) * ds], t[b, :, r * dt : (r + 1) * dt]
            ps = softmax(np.array([xs[i] @ xs[j] for j in cols]) / np.sqrt(ds))
            pt = softmax(np.array([xt[i] @ xt[j] for j in cols]) / np.sqrt(dt))
            kls.append(float((pt * (np.log(pt) - np.log(ps))).sum()))
    return float(np.mean(kls))


def reference_gram(s: np.ndarray, t: np.ndarray, seg: np.ndarray) -> float:
    cos = lambda x, i, j: x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j])  # noqa: E731
    return float(
        np.mean([(cos(s[b], i, j) - cos(t[b], i, j)) ** 2 for b, i, cols in allowed_pairs(seg) for j in cols])
    )


@pytest.mark.parametrize("chunk", [2, 256])
def test_attention_relations_match_a_direct_computation_for_any_widths_and_heads(chunk):
    torch.manual_seed(0)
    inputs, seg = batch()
    s, t = torch.randn(2, 9, 12, requires_grad=True), torch.randn(2, 9, 20)  # widths differ; 4 relation heads
    loss = attention_relation_loss(s, t, seg, heads=4, chunk_size=chunk)
    expected = reference_attention(s.detach().double().numpy(), t.double().numpy(), seg.numpy(), 4)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert s.grad[1, 6:].abs().sum() == 0  # padding takes no part


def test_identical_relations_give_zero_even_when_widths_differ():
    _, seg = batch()
    x = torch.randn(2, 9, 8)
    assert attention_relation_loss(x, x.clone(), seg, heads=2).item() == pytest.approx(0, abs=1e-6)
    assert attention_relation_loss(x, torch.randn(2, 9, 8), seg, heads=2).item() > 1e-3
    # a wider teacher with the same cosine geometry (its features duplicated): the Gram relation is width-free
    assert gram_relation_loss(x, torch.cat([x, x], -1), seg).item() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("chunk", [3, 256])
def test_gram_relations_match_a_direct_computation(chunk):
    torch.manual_seed(1)
    _, seg = batch()
    s, t = torch.randn(2, 9, 16, requires_grad=True), torch.randn(2, 9, 24)
    loss = gram_relation_loss(s, t, seg, chunk_size=chunk)
    assert loss.item() == pytest.approx(
        reference_gram(s.detach().double().numpy(), t.double().numpy(), seg.numpy()), rel=1e-4
    )
    loss.backward()
    assert torch.isfinite(s.grad).all()
