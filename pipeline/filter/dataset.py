"""The filter stage's output dataset: parquet shards in TRL's conversational prompt/completion format.

Columns: `prompt` (the chat messages the teacher saw), `completion` ([one assistant message]), `id`,
`problem_id`, `source`, `answer` (gold), `num_prompt_tokens`, `num_completion_tokens`, `reasoning_tokens`,
`answer_tokens`, and when the input has a logprob sidecar the teacher's per-token data aligned with the
completion's tokens: `teacher_token_ids` (int32), `teacher_topk_ids` (int32, k per token) and
`teacher_topk_logprobs` (float16, k per token).

The assistant text is the completion exactly as generated (`<think>\\n{reasoning}\\n</think>\\n\\n{answer}`
for R1-style teachers), so the stored teacher token ids stay the tokenization of what the student trains on.
A completion that began inside the think block (its `<think>` was in the prompt) gets `<think>\\n` prepended,
so students learn to open it; its teacher logprobs, which do not cover that prefix, are left out (null).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.filter.steps import Item
from pipeline.records.logprobs import Sidecar


def assistant_text(item: Item) -> tuple[str, bool]:
    """(the text to train on, whether it is the generated text unchanged)."""
    completion = item.sample.completion
    if completion.lstrip().startswith("<think>") or "</think>" not in completion:
        return completion, True
    return "<think>\n" + completion, False


def schema(k: int | None) -> pa.Schema:
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    fields = [
        ("id", pa.string()),
        ("problem_id", pa.string()),
        ("source", pa.string()),
        ("answer", pa.string()),
        ("prompt", pa.list_(message)),
        ("completion", pa.list_(message)),
        ("num_prompt_tokens", pa.int64()),
        ("num_completion_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("answer_tokens", pa.int64()),
    ]
    if k:
        fields += [
            ("teacher_token_ids", pa.list_(pa.int32())),
            ("teacher_topk_ids", pa.list_(pa.list_(pa.int32(), k))),
            ("teacher_topk_logprobs", pa.list_(pa.list_(pa.float16(), k))),
        ]
    return pa.schema(fields)


def row(item: Item, sidecar: Sidecar | None) -> dict[str, Any]:
    s = item.sample
    text, verbatim = assistant_text(item)
    out = {
        "id": s.id,
        "problem_id": s.problem_id,
        "source": s.source,
        "answer": s.answer,
        "prompt": s.prompt,
        "completion": [{"role": "assistant", "content": text}],
        "num_prompt_tokens": s.num_prompt_tokens,
        "num_completion_tokens": s.num_completion_tokens,
        "reasoning_tokens": item.reasoning_tokens,
        "answer_tokens": item.answer_tokens,
    }
    if sidecar is not None:
        topk = sidecar[s.id] if verbatim and s.id in sidecar else None
        out["teacher_token_ids"] = topk.token_ids if topk is not None else None
        out["teacher_topk_ids"] = list(topk.topk_ids) if topk is not None else None
        out["teacher_topk_logprobs"] = list(topk.topk_logprobs) if topk is not None else None
    return out


def write_dataset(folder: Path, items: list[Item], cfg: Any) -> list[Path]:
    """Write `items` as parquet shards of `cfg.rows_per_shard` rows; returns the files (at least one)."""
    sidecar = None
    if cfg.logprobs:
        found = Sidecar(cfg.input)
        sidecar = found if len(found) else None
    table_schema = schema(sidecar.k if sidecar else None)
    folder.mkdir(parents=True, exist_ok=True)
    size = cfg.rows_per_shard
    n = max(1, -(-len(items) // size))
    files = []
    for shard in range(n):
        rows = [row(it, sidecar) for it in items[shard * size : (shard + 1) * size]]
        path = folder / f"train-{shard:05d}-of-{n:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=table_schema), path)
        files.append(path)
    return files
