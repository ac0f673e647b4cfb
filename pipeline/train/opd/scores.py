"""What a teacher returns for the student's rollouts: per completion token, the teacher's logprob of that token and
its top-k ids and logprobs (`TokenScores`), built from a local forward pass or from vLLM's prompt_logprobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

Sequence = tuple[list[int], list[int]]
"""(prompt ids, completion ids) of one rollout."""


@dataclass
class TokenScores:
    """The teacher's view of one completion: [C] logprob of each token, [C, k] top-k ids and logprobs."""

    logprob: torch.Tensor
    topk_ids: torch.Tensor
    topk_logprobs: torch.Tensor


def split_scores(
    own: torch.Tensor, ids: torch.Tensor, lps: torch.Tensor, lengths: list[int]
) -> list[TokenScores]:
    """Flat per-token scores of several completions, cut back into one TokenScores per completion."""
    return [
        TokenScores(*x) for x in zip(own.split(lengths), ids.split(lengths), lps.split(lengths), strict=True)
    ]


def parse_prompt_logprobs(entries: list[dict[str, Any]], completion: list[int], k: int) -> TokenScores:
    """vLLM's prompt_logprobs for the completion positions -> TokenScores; each entry maps a token id (a string
    in JSON) to its logprob and rank, holding the top-k and the position's own token."""
    own = torch.empty(len(completion))
    ids = torch.zeros(len(completion), k, dtype=torch.int32)
    lps = torch.full((len(completion), k), float("-inf"))
    for j, (entry, token) in enumerate(zip(entries, completion, strict=True)):
        own[j] = float(entry[str(token)]["logprob"])
        ranked = sorted(entry.items(), key=lambda kv: kv[1].get("rank") or 0)
        top = [(int(t), float(v["logprob"])) for t, v in ranked if (v.get("rank") or k + 1) <= k][:k]
        for i, (t, lp) in enumerate(top):
            ids[j, i], lps[j, i] = t, lp
    return TokenScores(own, ids, lps)
