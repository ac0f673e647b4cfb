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
from pipeline.records.read import located_problems, read_jsonl, read_unique_samples
from pipeline.records.schema import Problem, RecordError, Sample

FINGERPRINT = "fingerprint.json"


@dataclass
class Work:
    """One planned sample: a problem and a sample index, or (score mode) an existing sample."""

    problem: Problem
    sample_index: int
    existing: Sample | None = None
    where: str = ""
    """`file:line` of the problem (or sample) it comes from, for errors."""

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
    """The planned samples, every input record read and checked; no input at all is an error."""
    if cfg.mode == "score":
        work = [
            Work(Problem(s.problem_id, s.problem, s.answer, s.source, s.tests, s.metadata), s.sample_index, s)
            for s in read_unique_samples(cfg.samples)
            if in_shard(s.problem_id, shard)
        ]
    else:
        problems = [(w, p) for w, p in located_problems(cfg.problems) if in_shard(p.id, shard)]
        work = [Work(p, i, where=w) for w, p in problems for i in range(cfg.sampling.n)]
    if not work:
        source = cfg.samples if cfg.mode == "score" else cfg.problems.describe()
        field = "samples" if cfg.mode == "score" else "problems"
        raise RecordError(
            f"{source}: field '{field}': no {'samples' if cfg.mode == 'score' else 'problems'}"
            f"{' in shard ' + cfg.shard if shard else ''}; nothing to generate",
            hint="check the file (and 'limit'); an empty output would look complete",
        )
    return work


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
        **plan_fingerprint(cfg),
    }


def plan_fingerprint(cfg: GenerateConfig) -> dict[str, Any]:
    """What decides which samples are planned: the input's selection settings (the hashes come with the work)."""
    if cfg.mode == "score":
        return {}
    return {"problems.limit": cfg.problems.limit, "problems.fields": dict(cfg.problems.fields)}


def content_hashes(work: list[Work]) -> dict[str, str]:
    """Problem id (score mode: sample id) -> a hash of what a sample is made from (text, gold; completion)."""
    hashes: dict[str, str] = {}
    for w in work:
        key = w.existing.id if w.existing else w.problem.id
        text = w.existing.completion if w.existing else f"{w.problem.problem}\0{w.problem.answer}"
        hashes.setdefault(key, hashlib.sha256(text.encode()).hexdigest()[:16])
    return hashes


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, as lines for the user. The plan may grow (problems appended, a
    larger `limit`): the samples already written stay valid. Anything else is a change."""
    records = _content_changes(old.get("content"), new.get("content"))
    shrunk = any(not line.startswith("input records added") for line in records)
    keys = []
    for k in sorted(old):  # a key the old fingerprint lacks (made by an older version) cannot be compared
        a, b = old.get(k), new.get(k)
        if a == b or k == "content" or (k == "problems.limit" and not shrunk and _larger(a, b)):
            continue
        keys.append(f"{k}: {a!r} -> {b!r}")
    return records + keys if shrunk or keys else []


def _larger(old_limit: int | None, new_limit: int | None) -> bool:
    return new_limit is None or (old_limit is not None and new_limit > old_limit)


def _content_changes(a: Any, b: Any) -> list[str]:
    """Input records changed, removed or added between two {id: hash} maps."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return []
    lines = []
    for label, ids in (
        ("changed", sorted(i for i in set(a) & set(b) if a[i] != b[i])),
        ("removed", sorted(set(a) - set(b))),
        ("added", sorted(set(b) - set(a))),
    ):
        if ids:
            lines.append(
                f"input records {label}: {len(ids)} ({', '.join(ids[:3])}{', ...' * (len(ids) > 3)})"
            )
    return lines


def has_samples(out: Path) -> bool:
    return any(out.glob("samples-*.jsonl"))


def check_fingerprint(out: Path, fp: dict[str, Any]) -> None:
    """Refuse to add samples made differently to a folder that holds samples, listing what changed."""
    path = out / FINGERPRINT
    if not path.exists() or not has_samples(out):
        return
    changed = _changes(json.loads(path.read_text()), fp)
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
    from pipeline.generate.engine_api import Request

    template = load_prompt(cfg.prompt.template)
    system = load_prompt(cfg.prompt.system) if cfg.prompt.system else None
    think = cfg.prompt.think_prefix and cfg.mode == "generate"
    prefix = THINK_PREFIX if think else ""
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False) if (prefix and tokenizer) else []
    cache: dict[str, tuple[list[dict[str, str]], list[int]]] = {}
    requests = []
    longest = max(map(len, tokenizer.get_vocab()), default=1) if tokenizer is not None else 0
    for w in todo:
        if w.problem.id not in cache:
            messages = (
                w.existing.prompt if w.existing else build_messages(template, w.problem.problem, system)
            )
            if max_model_len and len(w.problem.problem) > max_model_len * longest:
                refuse_long(
                    w, f"over {max_model_len} tokens ({len(w.problem.problem):,} characters)", max_model_len
                )
            ids = prompt_ids(tokenizer, messages, think) if tokenizer is not None else []
            cache[w.problem.id] = (messages, ids)
        messages, ids = cache[w.problem.id]
        completion_ids = score_ids(w.existing, tokenizer) if w.existing else []
        seed = cfg.sampling.sample_seed(w.problem.id, w.sample_index)
        request = Request(
            w.id, messages, seed, cfg.sampling.max_tokens, ids, prefix, prefix_ids, completion_ids
        )
        requests.append(request)
    fit_budgets(cfg, requests, max_model_len, {w.id: w.where for w in todo})
    return requests


def fit_budgets(
    cfg: GenerateConfig, requests: list, max_model_len: int | None, where: dict[str, str] | None = None
) -> None:
    """Cap each request's new tokens to what fits the model's context; a prompt that leaves no room is an
    error naming the input file and line (checked before the engine starts, then again with its real limit)."""
    if max_model_len is None:
        return
    for r in requests:
        used = len(r.prompt_ids) + len(r.completion_ids)
        r.max_tokens = min(cfg.sampling.max_tokens, max_model_len - used)
        if r.max_tokens < 1:
            origin = (where or {}).get(r.sample_id) or f"sample {r.sample_id}"
            what = f"the prompt{' + completion' if r.completion_ids else ''} is {used} tokens"
            raise RecordError(
                f"{origin}: field '{'completion' if r.completion_ids else 'problem'}': {what}; the model's "
                f"context is {max_model_len} (max_model_len)",
                hint="shorten or drop this record, or use a model with a longer context",
            )


def refuse_long(w: Work, size: str, max_model_len: int) -> None:
    """A text longer than the context even if every token were the vocabulary's longest: refused untokenized
    (tokenizing a 50 MB prompt takes minutes)."""
    raise RecordError(
        f"{w.where or 'sample ' + w.id}: field 'problem': the prompt is {size}; the model's context is "
        f"{max_model_len} (max_model_len)",
        hint="shorten or drop this record, or use a model with a longer context",
    )


def score_ids(sample: Sample, tokenizer: Any) -> list[int]:
    """The token ids a student would be trained on: the completion, then EOS if the teacher stopped."""
    ids = tokenizer.encode(sample.completion, add_special_tokens=False)
    return ids + [tokenizer.eos_token_id] if sample.finish_reason == "stop" else ids
