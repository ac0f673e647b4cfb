"""The transformers engine: batched `model.generate`, the fallback where vLLM is absent.

Sampling is seeded per batch of `batch_size` requests (from its first sample's seed): the batches of a run are
fixed by its plan and shards are committed on batch boundaries (flush_every is a multiple of batch_size), so a
resumed run reproduces them. Teacher logprobs are the raw logits of each step (`output_logits=True`, before
temperature and top-p); the forced prefix and score mode use one forward pass, with the vocabulary projection
applied in chunks so a long completion never materialises a [tokens x vocab] matrix at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import numpy as np

from pipeline.generate.config import GenerateConfig
from pipeline.generate.engine_api import Completion, Request
from pipeline.records.logprobs import TopK, to_fp16

CHUNK = 1024  # positions per vocabulary projection


class TransformersEngine:
    def __init__(self, cfg: GenerateConfig, tokenizer: Any) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.tokenizer, self.torch = tokenizer, torch
        kwargs = {"revision": cfg.revision, "dtype": "auto", **cfg.engine}
        self.model = AutoModelForCausalLM.from_pretrained(cfg.model, **kwargs).eval()
        if "device_map" not in cfg.engine:
            self.model.to("cuda" if torch.cuda.is_available() else "cpu")
        self.device = next(self.model.parameters()).device
        self.max_model_len = int(getattr(self.model.config, "max_position_embeddings", 0)) or None
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.eos_ids.add(tokenizer.eos_token_id)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def run(self, cfg: GenerateConfig, requests: Iterable[Request]) -> Iterator[Completion]:
        it = iter(requests)
        while batch := list(islice(it, cfg.batch_size)):
            with self.torch.inference_mode():
                yield from (self.score(cfg, batch) if batch[0].completion_ids else self.generate(cfg, batch))

    def left_pad(self, rows: list[list[int]]) -> tuple[Any, Any]:
        width = max(len(r) for r in rows)
        ids = [[self.pad_id] * (width - len(r)) + r for r in rows]
        mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
        return (self.torch.tensor(ids, device=self.device), self.torch.tensor(mask, device=self.device))

    def topk_of_positions(self, k: int, input_ids: Any, mask: Any, start: int) -> tuple[Any, Any, Any]:
        """Log-softmax top-k (and the full log-probs' gather helper) of positions start.. of a padded batch."""
        out = self.model(
            input_ids=input_ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1
        )
        hidden = out.hidden_states[-1][:, start:]
        head = self.model.get_output_embeddings()
        ids, lps, chosen = [], [], []
        targets = input_ids[:, start + 1 :]
        for a in range(0, hidden.shape[1] - 1, CHUNK):
            logp = self.torch.log_softmax(
                head(hidden[:, a : a + CHUNK][:, : targets.shape[1] - a]).float(), -1
            )
            top = logp.topk(k, dim=-1)
            ids.append(top.indices)
            lps.append(top.values)
            chosen.append(logp.gather(-1, targets[:, a : a + CHUNK, None]).squeeze(-1))
        cat = self.torch.cat
        return cat(ids, 1).cpu().numpy(), cat(lps, 1).cpu().numpy(), cat(chosen, 1).cpu().numpy()

    def score(self, cfg: GenerateConfig, batch: list[Request]) -> Iterator[Completion]:
        for r in batch:  # one at a time: scored completions are long
            ids, mask = self.left_pad([r.prompt_ids + r.completion_ids])
            n = len(r.completion_ids)
            top_ids, top_lps, chosen = self.topk_of_positions(cfg.logprobs, ids, mask, ids.shape[1] - n - 1)
            topk = TopK(
                np.asarray(r.completion_ids, np.int32),
                to_fp16(chosen[0]),
                top_ids[0].astype(np.int32),
                to_fp16(top_lps[0]),
            )
            yield Completion(r, "", "score", len(r.prompt_ids), n, topk)

    def generate(self, cfg: GenerateConfig, batch: list[Request]) -> Iterator[Completion]:
        k, n_prefix = (
            cfg.logprobs,
            len(batch[0].prefix_ids),
        )  # one think prefix for all (logprobs: no own prefixes)
        self.torch.manual_seed(batch[0].seed)
        ids, mask = self.left_pad([r.prompt_ids for r in batch])
        out = self.sample_batch(cfg, batch, ids, mask)
        new = out.sequences[:, ids.shape[1] :].cpu().tolist()
        step_logp = self.torch.log_softmax(self.torch.stack(out.logits, 1).float(), -1) if k else None
        prefix_top = None
        if k and n_prefix:
            prefix_top = self.topk_of_positions(k, ids, mask, ids.shape[1] - n_prefix - 1)
        for row, r in enumerate(batch):
            tokens, finish = self.cut(new[row][: r.max_tokens], cfg.sampling.stop)
            text = self.tokenizer.decode(
                tokens[:-1] if finish == "eos" else tokens, skip_special_tokens=False
            )
            topk = None
            if k:
                prefix_rows = tuple(a[row] for a in prefix_top) if prefix_top is not None else None
                topk = self.sampled_topk(k, r, tokens, step_logp[row, : len(tokens)], prefix_rows)
            yield Completion(
                r,
                r.prefix + text,
                "length" if finish == "length" else "stop",
                len(r.prompt_ids) - len(r.prefix_ids),
                len(r.prefix_ids) + len(tokens),
                topk,
            )

    def sample_batch(self, cfg: GenerateConfig, batch: list[Request], ids: Any, mask: Any) -> Any:
        """One `model.generate` call over the left-padded batch, with the step logits when logprobs are wanted."""
        s, k = cfg.sampling, cfg.logprobs
        return self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=s.temperature > 0,
            temperature=s.temperature or None,
            top_p=s.top_p,
            top_k=s.top_k or 0,
            min_p=s.min_p or None,
            max_new_tokens=max(r.max_tokens for r in batch),
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
            output_logits=bool(k),
            return_dict_in_generate=True,
            stop_strings=list(s.stop) or None,
            tokenizer=self.tokenizer if s.stop else None,
        )

    def sampled_topk(
        self, k: int, r: Request, tokens: list[int], logp: Any, prefix_rows: tuple[Any, ...] | None
    ) -> TopK:
        """One completion's top-k: the forced prefix's rows (scored, when there is one), then each sampled step's."""
        top = logp.topk(k, dim=-1)
        chosen = logp.gather(-1, self.torch.tensor(tokens, device=logp.device)[:, None]).squeeze(-1)
        parts = [(top.indices.cpu().numpy(), top.values.cpu().numpy(), chosen.cpu().numpy())]
        if prefix_rows is not None:
            parts.insert(0, prefix_rows)
        return TopK(
            np.asarray(r.prefix_ids + tokens, np.int32),
            to_fp16(np.concatenate([p[2] for p in parts])),
            np.concatenate([p[0] for p in parts]).astype(np.int32),
            to_fp16(np.concatenate([p[1] for p in parts])),
        )

    def cut(self, tokens: list[int], stops: list[str]) -> tuple[list[int], str]:
        """Tokens up to and including the first EOS ("eos"), or up to a matched stop string ("stop")."""
        for i, t in enumerate(tokens):
            if t in self.eos_ids:
                return tokens[: i + 1], "eos"
        text = self.tokenizer.decode(tokens, skip_special_tokens=False) if stops else ""
        for stop in stops:
            if stop in text:
                for end in range(1, len(tokens) + 1):
                    if stop in self.tokenizer.decode(tokens[:end], skip_special_tokens=False):
                        return tokens[:end], "stop"
        return tokens, "length"

    def close(self) -> None:
        del self.model
