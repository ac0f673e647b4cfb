"""What is already written to an output folder, and whether this run may add to it.

A sample's id is `{problem_id}/{sample_index}`; the set of ids already committed to an output folder is what
a rerun skips, so resuming never regenerates or duplicates a sample. The fingerprint (model, prompt texts,
chat template, sampling, logprobs, the input records' hashes) is stored in the folder with its first samples;
a rerun that would mix samples made differently into the same folder is refused with the list of what changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError
from pipeline.generate.config import GenerateConfig
from pipeline.prompts import load_prompt
from pipeline.records.read import read_jsonl

FINGERPRINT = "fingerprint.json"


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
        **({"prompt.prefix_field": cfg.prompt.prefix_field} if cfg.prompt.prefix_field else {}),
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


def iter_samples(out: Path) -> Iterator[dict[str, Any]]:
    """Every committed sample row, one at a time (a folder may hold a million ~30 KB traces)."""
    for shard in sorted(out.glob("samples-*.jsonl")):
        yield from (row for _, row in read_jsonl(shard))
