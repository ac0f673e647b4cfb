"""Multi-teacher fusion against direct numpy computations over dense distributions (no trainer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.train.kd.config import KDStageConfig
from pipeline.train.kd.fusion import MixedHead, fuse_own, fuse_topk
from pipeline.train.losses import topk_kd

V = 40


def dense(rng: np.random.Generator, n: int, sharp: float) -> np.ndarray:
    logits = rng.normal(0, sharp, (n, V))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def topk(p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.argsort(-p, -1)[:, :k]
    return ids, np.log(np.take_along_axis(p, ids, -1))


def reference(ps: list[np.ndarray], ks: list[int], ws: list[float]) -> np.ndarray:
    """The fused target as the module docstring defines it, on dense arrays: each teacher's mass on its own
    top-k, weighted; everything else (each teacher's tail) in the last column."""
    w = np.asarray(ws) / sum(ws)
    fused = np.zeros((ps[0].shape[0], V + 1))
    for p, k, wi in zip(ps, ks, w, strict=True):
        ids, _ = topk(p, k)
        keep = np.zeros_like(p)
        np.put_along_axis(keep, ids, np.take_along_axis(p, ids, -1), -1)
        fused[:, :V] += wi * keep
    fused[:, V] = 1 - fused[:, :V].sum(-1)
    return fused


def to_dense(ids: torch.Tensor, lps: torch.Tensor) -> np.ndarray:
    out = np.zeros((ids.shape[0], V + 1))
    p = lps.exp().double().numpy()
    for row in range(ids.shape[0]):
        for i, v in zip(ids[row].tolist(), p[row], strict=True):
            out[row, i] += v
    out[:, V] = 1 - out[:, :V].sum(-1)
    return out


def test_fused_top_k_is_the_weighted_union_with_each_teachers_tail_in_the_tail():
    rng = np.random.default_rng(0)
    ps, ks, ws = [dense(rng, 6, 2.0), dense(rng, 6, 3.0), dense(rng, 6, 1.0)], [5, 8, 3], [0.5, 0.3, 0.4]
    tops = [topk(p, k) for p, k in zip(ps, ks, strict=True)]
    ids, lps = fuse_topk(
        [torch.as_tensor(i) for i, _ in tops], [torch.as_tensor(lp) for _, lp in tops], [w / 1.2 for w in ws]
    )
    assert ids.shape == (6, 16)
    np.testing.assert_allclose(to_dense(ids, lps), reference(ps, ks, ws), atol=1e-6)
    kept = torch.isfinite(lps)
    for row in range(6):  # every id of the union once, the spare slots -inf
        assert len(set(ids[row][kept[row]].tolist())) == int(kept[row].sum())


def test_teachers_covering_the_vocabulary_fuse_to_the_exact_mixture():
    rng = np.random.default_rng(1)
    ps = [dense(rng, 4, 2.0), dense(rng, 4, 2.0)]
    tops = [topk(p, V) for p in ps]
    ids, lps = fuse_topk(
        [torch.as_tensor(i) for i, _ in tops], [torch.as_tensor(lp) for _, lp in tops], [0.25, 0.75]
    )
    np.testing.assert_allclose(to_dense(ids, lps)[:, :V], 0.25 * ps[0] + 0.75 * ps[1], atol=1e-6)
    own = fuse_own([torch.as_tensor(np.log(p[:, 3])) for p in ps], [0.25, 0.75])
    np.testing.assert_allclose(own.numpy(), np.log(0.25 * ps[0][:, 3] + 0.75 * ps[1][:, 3]), rtol=1e-5)


def test_kd_loss_on_a_fused_target_is_the_forward_kl_over_the_union_and_the_tail():
    rng = np.random.default_rng(2)
    ps, ks, ws = [dense(rng, 5, 2.5), dense(rng, 5, 2.5)], [4, 6], [0.7, 0.3]
    tops = [topk(p, k) for p, k in zip(ps, ks, strict=True)]
    ids, lps = fuse_topk([torch.as_tensor(i) for i, _ in tops], [torch.as_tensor(lp) for _, lp in tops], ws)
    student = rng.normal(0, 1.0, (5, V))
    loss = topk_kd(torch.as_tensor(student), ids, lps, tail="bucket", valid=ids < V)
    target = reference(ps, ks, ws)
    s = np.exp(student) / np.exp(student).sum(-1, keepdims=True)
    union = target[:, :V] > 0
    s_bucket = np.concatenate([np.where(union, s, 0), 1 - np.where(union, s, 0).sum(-1, keepdims=True)], -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(target > 0, target * (np.log(target) - np.log(s_bucket)), 0).sum(-1)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-4)


def test_the_mixed_head_gives_the_log_of_the_weighted_mixture_of_softmaxes():
    torch.manual_seed(0)

    class Teacher(torch.nn.Module):
        def __init__(self, width: int, vocab: int) -> None:
            super().__init__()
            from transformers import Qwen2Config

            self.head = torch.nn.Linear(width, vocab, bias=False)
            self.config = Qwen2Config(hidden_size=width, vocab_size=vocab)

        def get_output_embeddings(self) -> torch.nn.Module:
            return self.head

    a, b = Teacher(8, 30), Teacher(12, 32)  # another width, a padded vocabulary
    mixed = MixedHead([a, b], [0.6, 0.4])
    h = torch.randn(7, 20)
    out = mixed(h).detach().double().numpy()
    la = (h[:, :8] @ a.head.weight.T).detach().double().numpy()
    lb = (h[:, 8:] @ b.head.weight.T).detach().double().numpy()[:, :30]

    def soft(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    np.testing.assert_allclose(out, np.log(0.6 * soft(la) + 0.4 * soft(lb)), atol=1e-5)
    assert mixed.weight.shape[0] == 30


@pytest.mark.parametrize(
    ("teachers", "message"),
    [
        ("[{weight: 0.0}, {weight: 0.0, scores: s}]", "field 'kd.teachers': the weights sum to 0.0"),
        ("[{weight: -1.0}, {weight: 2.0, scores: s}]", r"kd.teachers\[0\]: 'weight' must be >= 0"),
        ("[{weight: 1.0, model: m}]", r"field 'kd.teachers\[0\].model': kd.teacher offline"),
        ("[{weight: 1.0}, {weight: 1.0}]", "only one entry can be the training data's own"),
    ],
)
def test_bad_teacher_weights_and_kinds_are_one_line_naming_the_field(teachers, message):
    with pytest.raises(ConfigError, match=message):
        load_config(KDStageConfig, None, ["model=m", "data=[{path: d}]", f"kd.teachers={teachers}"])
