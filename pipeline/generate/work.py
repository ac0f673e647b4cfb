"""What the generate stage has to do: planned samples, what is already written, and the run's fingerprint.

A sample's id is `{problem_id}/{sample_index}`; the set of ids already committed to an output folder is what
a rerun skips, so resuming never regenerates or duplicates a sample. The fingerprint (model, prompt texts,
chat template, sampling, logprobs) is stored in the folder on the first run; a rerun that would mix samples
made differently into the same folder is refused with the list of what changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError
from pipeline.generate.config import GenerateConfig
from pipeline.prompts import THINK_PREFIX, build_messages, load_prompt, prompt_ids
from pipeline.records import Problem, RecordError, Sample, load_problems, read_jsonl, read_samples, write_json

FINGERPRINT = "fingerprint.json"


@dataclass
class Work:
    """One planned sample: a problem and a sample index, or (score mode) an existing sample."""

    problem: Problem
    sample_index: int
    existing: Sample | None = None

    @property
    def id(self) -> str:
        return self.existing.id if self.existing else f"{self.problem.id}/{self.sample_index}"

    def to_sample(self, cfg: GenerateConfig, completion: Any) -> Sample:
        if self.existing is not None:  # score mode: the sample as it was, with the scored token count
            return replace(
                self.existing,
                num_completion_tokens=completion.num_completion_tokens,
                metadata={**self.existing.metadata, "scored_by": cfg.model},
            )
        p = self.problem
        sampling = {**asdict(cfg.sampling), "seed": completion.request.seed}
        return Sample(
            id=self.id,
            problem_id=p.id,
            sample_index=self.sample_index,
            problem=p.problem,
            answer=p.answer,
            prompt=completion.request.messages,
            completion=completion.text,
            finish_reason=completion.finish_reason,
            num_prompt_tokens=completion.num_prompt_tokens,
            num_completion_tokens=completion.num_completion_tokens,
            teacher=cfg.model,
            sampling=sampling,
            source=p.source,
            tests=p.tests,
            metadata=p.metadata,
        )


def in_shard(problem_id: str, shard: tuple[int, int] | None) -> bool:
    """A deterministic partition by a hash of the problem id: disjoint, complete, stable under reordering."""
    if shard is None:
        return True
    return int(hashlib.sha256(problem_id.encode()).hexdigest()[:12], 16) % shard[1] == shard[0]


def load_work(cfg: GenerateConfig, shard: tuple[int, int] | None) -> list[Work]:
    if cfg.mode == "score":
        work, seen = [], set()
        for s in read_samples(cfg.samples):
            if s.id in seen:
                raise RecordError(f"{cfg.samples}: sample id {s.id!r} appears twice")
            seen.add(s.id)
            if in_shard(s.problem_id, shard):
                problem = Problem(s.problem_id, s.problem, s.answer, s.source, s.tests, s.metadata)
                work.append(Work(problem, s.sample_index, existing=s))
        return work
    problems = [p for p in load_problems(cfg.problems) if in_shard(p.id, shard)]
    return [Work(p, i) for p in problems for i in range(cfg.sampling.n)]


def chat_template_sha(chat_template: Any) -> str:
    return hashlib.sha256(str(chat_template).encode()).hexdigest()[:16]


def fingerprint(cfg: GenerateConfig, tokenizer: Any) -> dict[str, Any]:
    """Everything that decides what a sample looks like; not the paths, limits or parallelism."""
    template = load_prompt(cfg.prompt.template)
    system = load_prompt(cfg.prompt.system) if cfg.prompt.system else None
    chat_template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    return {
        "mode": cfg.mode,
        "model": cfg.model,
        "revision": cfg.revision,
        "backend": cfg.backend,
        "dtype": cfg.engine.get("dtype"),
        "input": cfg.samples if cfg.mode == "score" else cfg.problems.describe(),
        "prompt.template": template.tag,
        "prompt.system": system.tag if system else None,
        "prompt.think_prefix": cfg.prompt.think_prefix,
        "chat_template": chat_template_sha(chat_template) if chat_template else None,
        **{f"sampling.{k}": v for k, v in asdict(cfg.sampling).items()},
        "logprobs": cfg.logprobs,
    }


def check_fingerprint(out: Path, fp: dict[str, Any]) -> None:
    path = out / FINGERPRINT
    if not path.exists():
        write_json(path, fp)
        return
    old = json.loads(path.read_text())
    changed = [
        f"{k}: {old.get(k)!r} -> {fp.get(k)!r}" for k in sorted(set(old) | set(fp)) if old.get(k) != fp.get(k)
    ]
    if changed:
        raise ConfigError(
            f"{out} holds samples made with other settings; changed: {'; '.join(changed)}. "
            "Use a new output folder, or restore those settings to resume."
        )


_ID = re.compile(r'^\{"id": ("(?:[^"\\]|\\.)*")')


def done_ids(out: Path) -> set[str]:
    """Ids of samples committed to `out` (complete shards only), read from line prefixes: fast on GBs of text."""
    ids: set[str] = set()
    for shard in sorted(out.glob("samples-*.jsonl")):
        with shard.open(encoding="utf-8") as f:
            for line in f:
                m = _ID.match(line)
                ids.add(json.loads(m.group(1)) if m else json.loads(line)["id"])
    return ids


def read_all_samples(out: Path) -> list[dict[str, Any]]:
    rows = []
    for shard in sorted(out.glob("samples-*.jsonl")):
        rows.extend(row for _, row in read_jsonl(shard))
    return rows


def render_requests(cfg: GenerateConfig, todo: list[Work], tokenizer: Any, max_model_len: int | None) -> list:
    """Chat-templated prompt ids for every planned sample (one rendering per problem), checked against the
    model's context before the first token is generated."""
    from pipeline.generate.engines import Request

    template = load_prompt(cfg.prompt.template)
    system = load_prompt(cfg.prompt.system) if cfg.prompt.system else None
    think = cfg.prompt.think_prefix and cfg.mode == "generate"
    prefix = THINK_PREFIX if think else ""
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False) if (prefix and tokenizer) else []
    cache: dict[str, tuple[list[dict[str, str]], list[int]]] = {}
    requests = []
    for w in todo:
        if w.problem.id not in cache:
            messages = (
                w.existing.prompt if w.existing else build_messages(template, w.problem.problem, system)
            )
            ids = prompt_ids(tokenizer, messages, think) if tokenizer is not None else []
            cache[w.problem.id] = (messages, ids)
        messages, ids = cache[w.problem.id]
        completion_ids = score_ids(w.existing, tokenizer) if w.existing else []
        budget = cfg.sampling.max_tokens
        if max_model_len is not None:
            budget = min(budget, max_model_len - len(ids) - len(completion_ids))
            if budget < 1:
                raise RecordError(
                    f"sample {w.id}: prompt{' + completion' if completion_ids else ''} has "
                    f"{len(ids) + len(completion_ids)} tokens; the model's context is {max_model_len}"
                )
        seed = cfg.sampling.sample_seed(w.problem.id, w.sample_index)
        requests.append(Request(w.id, messages, seed, budget, ids, prefix, prefix_ids, completion_ids))
    return requests


def score_ids(sample: Sample, tokenizer: Any) -> list[int]:
    """The token ids a student would be trained on: the completion, then EOS if the teacher stopped."""
    ids = tokenizer.encode(sample.completion, add_special_tokens=False)
    return ids + [tokenizer.eos_token_id] if sample.finish_reason == "stop" else ids
