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
from pipeline.records.logprobs import Sidecar, SidecarFile, sidecar_path


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


def row(item: Item, sidecar: SidecarFile | None, topk_columns: bool) -> dict[str, Any]:
    """The dataset row of a kept sample; with `topk_columns`, its teacher top-k from `sidecar` (null if absent)."""
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
    if topk_columns:
        topk = sidecar.get(s.id) if sidecar is not None and verbatim and s.id in sidecar else None
        out["teacher_token_ids"] = topk.token_ids if topk is not None else None
        out["teacher_topk_ids"] = list(topk.topk_ids) if topk is not None else None
        out["teacher_topk_logprobs"] = list(topk.topk_logprobs) if topk is not None else None
    return out


def sidecar_k(path: str | Path) -> int | None:
    """k of the teacher's top-k stored under `path`, or None when no sidecar holds any sample."""
    files = Sidecar.listing(Path(path))
    for f in files:
        if SidecarFile(f).ids:
            return SidecarFile(files[0]).k
    return None


def own_sidecar(shard: str | None) -> SidecarFile | None:
    """The sidecar beside a Sample shard (`samples-00003.jsonl` -> `logprobs-00003.safetensors`), if any."""
    if shard is None or not Path(shard).name.startswith("samples-"):
        return None
    path = sidecar_path(Path(shard))
    return SidecarFile(path) if path.exists() else None


class DatasetWriter:
    """Kept samples into parquet shards of `cfg.rows_per_shard` rows, a row group per batch written.

    The teacher's top-k come from the sidecar beside each sample's shard, one sidecar open at a time (samples
    arrive in input order, shard after shard). Shards are named `train-00000-of-00003.parquet` once the count
    is known, at `close`.
    """

    def __init__(self, folder: Path, cfg: Any) -> None:
        self.folder, self.size = folder, cfg.rows_per_shard
        self.k = sidecar_k(cfg.input) if cfg.logprobs else None
        self.schema = schema(self.k)
        self.parts: list[Path] = []
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0  # in the open shard
        self.shard: tuple[str | None, SidecarFile | None] = (None, None)
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, items: list[Item]) -> None:
        while items:
            if self.writer is None or self.rows == self.size:
                self._next_shard()
            room = self.size - self.rows
            rows = [row(it, self._sidecar(it), self.k is not None) for it in items[:room]]
            self.writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
            self.rows += len(rows)
            items = items[room:]

    def _next_shard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.parts.append(self.folder / f".train-{len(self.parts):05d}.partial")
        self.writer = pq.ParquetWriter(self.parts[-1], self.schema)
        self.rows = 0

    def _sidecar(self, item: Item) -> SidecarFile | None:
        if self.k is None:
            return None
        if self.shard[0] != item.shard:
            self.shard = (item.shard, own_sidecar(item.shard))
        return self.shard[1]

    def close(self) -> list[Path]:
        """Finish the last shard and name them all; returns the files (at least one, maybe empty)."""
        if self.writer is None:
            self._next_shard()
        self.writer.close()
        n = len(self.parts)
        files = [self.folder / f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
        for part, final in zip(self.parts, files, strict=True):
            part.rename(final)
        return files
