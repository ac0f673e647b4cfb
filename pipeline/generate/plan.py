"""What a generate run has to do, decided before any engine starts: the planned samples, those still to make,
and their rendered requests.

    plan = make_plan(cfg, tokenizer=None, engine=None, allow_incomplete=False)
    plan.out, plan.planned (every planned sample's id), plan.todo (how many are not yet written),
    plan.requests(max_model_len) (prompt ids, seeds, budgets: rendered as the engine takes them),
    plan.fingerprint (stored with the first commit), plan.tokenizer

A plan keeps ids, counters and a digest a record, not the work: the input is read once to check it (every record,
every prompt against the context) and again as the engine takes the requests, so a million planned samples cost
their ids.

Every check that can fail on the user's input (paths, model, tokenizer, records, prompt lengths, the folder's
fingerprint) runs here, so a bad input stops the run before anything is started or written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pipeline import preflight
from pipeline.errors import UserError, render
from pipeline.generate.config import GenerateConfig, parse_shard
from pipeline.generate.engine_api import Request
from pipeline.generate.resume import check_fingerprint, done_ids, fingerprint
from pipeline.handoff import require_complete
from pipeline.outputs import FolderLock
from pipeline.prompts import THINK_PREFIX, build_messages, load_prompt, prompt_ids, think_overlap
from pipeline.records.read import iter_located_problems, iter_unique_samples
from pipeline.records.schema import Problem, RecordError, Sample


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


@dataclass
class Plan:
    """A run's plan (see the module docstring): ids, counters and a digest a record; the work itself is read again
    from the input as the engine takes it (a run may plan a million samples of ~30 KB)."""

    cfg: GenerateConfig
    shard: tuple[int, int] | None
    out: Path
    planned: set[str]
    """The id of every planned sample."""
    done: set[str]
    """The ids already committed to `out` (a rerun skips them)."""
    max_model_len: int | None
    """The context every request was checked against."""
    fingerprint: dict[str, Any]
    tokenizer: Any
    records: dict[str, int]
    """A digest of each planned input record, every field (`record_digest`), to tell one changed under the run."""

    @property
    def todo(self) -> int:
        """How many planned samples are still to make."""
        return len(self.planned) - len(self.done)

    def work(self) -> Iterator[Work]:
        """The samples still to make, in input order, read again from the input. Records added since the plan
        was made wait for the next run (as they did when the plan held the work); a planned record changed in
        any field, or gone, is an error: the samples must be made from what was planned and checked."""
        left, last = self.todo, ("", 0)
        for w in self.reread():
            if w.id in self.done or w.id not in self.planned:
                continue
            key = content_key(w)
            if last[0] != key:
                last = (key, record_digest(w))
            if last[1] != self.records.get(key):
                raise changed_under(f"{w.where}: changed while generate was running")
            left -= 1
            yield w
        if left > 0:
            source = self.cfg.samples if self.cfg.mode == "score" else self.cfg.problems.describe()
            raise changed_under(
                f"{source}: {left} planned samples' records were removed while generate was running"
            )

    def reread(self) -> Iterator[Work]:
        """`iter_work` again: the input read cleanly when planned, so a record that no longer does (a file
        rewritten in place, cut short) means it changed under the run; a read that fails (a Hub stream, a network
        filesystem) is one line too."""
        records = iter_work(self.cfg, self.shard)
        while True:
            try:
                w = next(records)
            except StopIteration:
                return
            except RecordError as e:
                what = render(e.message, e.file, e.line, e.field, None)
                raise changed_under(f"{what} (it read cleanly when the run was planned)") from None
            except OSError as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise UserError(
                    f"reading the input failed mid-run ({type(e).__name__}: {first}); every sample committed so "
                    "far is kept",
                    hint="rerun the same command to resume",
                ) from None
            yield w

    def requests(self, max_model_len: int | None = None) -> Iterator[Request]:
        """The requests of `work()`, rendered as the engine takes them, budgets fitted to `max_model_len`."""
        return render_requests(self.cfg, self.work(), self.tokenizer, max_model_len or self.max_model_len)

    def check(self, max_model_len: int | None) -> None:
        """Render every request still to make against `max_model_len`, keeping nothing: a prompt that does not
        fit is an error naming its file and line, before anything is written."""
        for _ in render_requests(self.cfg, self.work(), self.tokenizer, max_model_len):
            pass


def make_plan(
    cfg: GenerateConfig, tokenizer: Any, engine: Any, allow_incomplete: bool, lock: FolderLock | None = None
) -> Plan:
    """Read and check everything; load the tokenizer unless a caller (eval, tests) passes it with its engine.
    With `lock`, a folder that exists is locked before what it holds is read (a new one is locked when made)."""
    shard = parse_shard(cfg.shard) if cfg.shard else None
    out = output_folder(cfg, shard)
    preflight.check_output_folder(out, stage="generate")  # never another stage's folder or a user's files
    if shard:  # the folder the shards sit in must be generate's too
        preflight.check_output_folder(cfg.output, stage="generate")
    if lock is not None and out.is_dir():
        lock.take(out)  # another run writing it: refused here, before an engine starts
    if cfg.mode == "score":  # scoring another run's samples: that run must have finished
        require_complete(cfg.samples, "generate", allow_incomplete=allow_incomplete, field="samples")
    planned: set[str] = set()
    hashes: dict[str, str] = {}
    records: dict[str, int] = {}
    for w in iter_work(cfg, shard):  # reads and validates every input record before the model loads
        planned.add(w.id)
        key = content_key(w)
        if key not in records:
            hashes[key], records[key] = content_hash(w), record_digest(w)
    if not planned:
        source = cfg.samples if cfg.mode == "score" else cfg.problems.describe()
        field = "samples" if cfg.mode == "score" else "problems"
        raise RecordError(
            f"{source}: field '{field}': no {'samples' if cfg.mode == 'score' else 'problems'}"
            f"{' in shard ' + cfg.shard if shard else ''}; nothing to generate",
            hint="check the file (and 'limit'); an empty output would look complete",
        )
    if engine is None and cfg.backend != "openai":
        preflight.check_model(cfg.model, "model", cfg.revision)
    if tokenizer is None and cfg.backend != "openai":
        tokenizer = preflight.load_tokenizer(cfg)
    fp = fingerprint(cfg, tokenizer) | {"content": hashes}
    check_fingerprint(out, fp)
    done = done_ids(out) & planned
    limit = getattr(engine, "max_model_len", None) if engine is not None else context_length(cfg)
    plan = Plan(cfg, shard, out, planned, done, limit, fp, tokenizer, records)
    if plan.todo:
        plan.check(limit)  # a prompt too long is refused
    return plan


def changed_under(what: str) -> RecordError:
    return RecordError(
        f"{what}; every sample committed so far is kept",
        hint="restore the input and rerun the same command to resume (an input changed for good needs a new output)",
    )


def content_key(w: Work) -> str:
    return w.existing.id if w.existing else w.problem.id


def record_digest(w: Work) -> int:
    """8 bytes of a hash of the whole input record a sample is made from (the problem; score mode: the sample)."""
    record = asdict(w.existing) if w.existing else asdict(w.problem)
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def content_hash(w: Work) -> str:
    """A hash of what a sample is made from (problem text and gold; score mode: the completion)."""
    text = w.existing.completion if w.existing else f"{w.problem.problem}\0{w.problem.answer}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def output_folder(cfg: GenerateConfig, shard: tuple[int, int] | None) -> Path:
    out = Path(cfg.output)
    return out / f"shard-{shard[0]:05d}-of-{shard[1]:05d}" if shard else out


def context_length(cfg: GenerateConfig) -> int | None:
    """The model's context as the engine will see it, known before the engine starts (None: unknown)."""
    if cfg.backend == "openai":
        return None
    if "max_model_len" in cfg.engine:
        return int(cfg.engine["max_model_len"])
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(cfg.model, revision=cfg.revision)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "max_position_embeddings", None)


def in_shard(problem_id: str, shard: tuple[int, int] | None) -> bool:
    """A deterministic partition by a hash of the problem id: disjoint, complete, stable under reordering."""
    if shard is None:
        return True
    return int(hashlib.sha256(problem_id.encode()).hexdigest()[:12], 16) % shard[1] == shard[0]


def iter_work(cfg: GenerateConfig, shard: tuple[int, int] | None) -> Iterator[Work]:
    """The planned samples in input order, each input record read and checked as it comes."""
    if cfg.mode == "score":
        for where, s in iter_unique_samples(cfg.samples):
            if in_shard(s.problem_id, shard):
                yield Work(
                    Problem(s.problem_id, s.problem, s.answer, s.source, s.tests, s.metadata),
                    s.sample_index,
                    s,
                    where,
                )
        return
    for where, p in iter_located_problems(cfg.problems):
        if in_shard(p.id, shard):
            yield from (Work(p, i, where=where) for i in range(cfg.sampling.n))


def render_requests(
    cfg: GenerateConfig, todo: Iterable[Work], tokenizer: Any, max_model_len: int | None
) -> Iterator[Request]:
    """Chat-templated prompt ids for each sample as it comes (one rendering per problem: its samples come
    together), its budget fitted to the model's context; a prompt that leaves no room is an error."""
    template = load_prompt(cfg.prompt.template)
    system = load_prompt(cfg.prompt.system) if cfg.prompt.system else None
    think = cfg.prompt.think_prefix and cfg.mode == "generate"
    prefix = THINK_PREFIX if think else ""
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False) if (prefix and tokenizer) else []
    last: tuple[str, list[dict[str, str]], list[int]] | None = None
    longest = max(map(len, tokenizer.get_vocab()), default=1) if tokenizer is not None else 0
    for w in todo:
        if last is None or last[0] != w.problem.id:
            messages = (
                w.existing.prompt if w.existing else build_messages(template, w.problem.problem, system)
            )
            if max_model_len and len(w.problem.problem) > max_model_len * longest:
                refuse_long(
                    w, f"over {max_model_len} tokens ({len(w.problem.problem):,} characters)", max_model_len
                )
            last = (
                w.problem.id,
                messages,
                prompt_ids(tokenizer, messages, think) if tokenizer is not None else [],
            )
        _, messages, ids = last
        own = problem_prefix(cfg, w, tokenizer, messages) if cfg.prompt.prefix_field else None
        completion_ids = score_ids(w.existing, tokenizer) if w.existing else []
        seed = cfg.sampling.sample_seed(w.problem.id, w.sample_index)
        request = Request(
            w.id, messages, seed, cfg.sampling.max_tokens, *(own or (ids, prefix, prefix_ids)), completion_ids
        )
        request.work = w
        fit_budget(cfg, request, max_model_len, w.where)
        yield request


def problem_prefix(
    cfg: GenerateConfig, w: Work, tokenizer: Any, messages: list[dict[str, str]]
) -> tuple[list[int], str, list[int]]:
    """`prompt.prefix_field`: the problem's own start of the assistant turn: the prompt's ids (ending with the
    prefix's), the prefix and its ids. A template that already opens the turn with part of it is not given it
    twice (as for the think prefix)."""
    field = cfg.prompt.prefix_field
    text = w.problem.metadata.get(field)
    if not isinstance(text, str) or not text:
        raise RecordError(
            f"{w.where or 'problem ' + w.problem.id}: field 'metadata.{field}': "
            f"{'missing' if text is None else 'not a non-empty string'}; prompt.prefix_field needs it on every problem",
            hint="add the prefix to every problem, or drop prompt.prefix_field",
        )
    if tokenizer is None:
        return [], text, []
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    rendered = rendered[: len(rendered) - think_overlap(rendered, text)]
    prefix_ids = tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(rendered, add_special_tokens=False) + prefix_ids, text, prefix_ids


def fit_budget(cfg: GenerateConfig, r: Request, max_model_len: int | None, where: str = "") -> None:
    """Cap a request's new tokens to what fits the model's context; a prompt that leaves no room is an error
    naming the input file and line."""
    if max_model_len is None:
        return
    used = len(r.prompt_ids) + len(r.completion_ids)
    r.max_tokens = min(cfg.sampling.max_tokens, max_model_len - used)
    if r.max_tokens < 1:
        what = f"the prompt{' + completion' if r.completion_ids else ''} is {used} tokens"
        raise RecordError(
            f"{where or 'sample ' + r.sample_id}: field '{'completion' if r.completion_ids else 'problem'}': "
            f"{what}; the model's context is {max_model_len} (max_model_len)",
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
