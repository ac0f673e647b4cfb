"""Where teacher logprobs enter the filter: each sidecar checked against its Sample shard before any step runs.

A generate folder pairs `samples-00003.jsonl` with `logprobs-00003.safetensors`. A truncated, swapped, deleted
or stale sidecar would otherwise give a traceback naming no file, rows with null teacher logprobs, or a kd
crash much later. Each sidecar must hold exactly its shard's sample ids, as many token rows as each sample's
`num_completion_tokens`, and (when the teacher's tokenizer is at hand) the very tokens of each completion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.records.logprobs import SidecarFile, sidecar_path
from pipeline.records.read import read_jsonl
from pipeline.records.schema import RecordError

HINT = "regenerate that shard's logprobs (`distill generate mode=score`), or filter with logprobs: false"


def shard_files(folder: Path) -> list[Path]:
    """The Sample shards under a generate folder (shard folders included), hidden temporaries skipped."""
    return sorted(
        p
        for p in folder.rglob("samples-*.jsonl")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def check_sidecars(folder: str | Path, tokenizer: Any = None) -> int:
    """Check every shard's sidecar (see the module doc); returns how many shards have one.

    Either every shard has a sidecar or none does; a mix means some were lost."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    shards = shard_files(folder)
    with_sidecar = [s for s in shards if sidecar_path(s).exists()]
    if with_sidecar and len(with_sidecar) < len(shards):
        lost = next(s for s in shards if not sidecar_path(s).exists())
        raise RecordError(
            f"{lost}: no logprob sidecar {sidecar_path(lost).name}, while {len(with_sidecar)} other shards have "
            "one: its samples would reach kd without teacher logprobs",
            hint=HINT,
        )
    for shard in with_sidecar:
        check_shard(shard, open_sidecar(sidecar_path(shard)), tokenizer)
    return len(with_sidecar)


def open_sidecar(path: Path) -> SidecarFile:
    from safetensors import SafetensorError

    try:
        return SidecarFile(path)
    except (SafetensorError, OSError, ValueError, KeyError) as e:  # a torn, missing or foreign file
        raise RecordError(
            f"{path}: not a readable logprob sidecar ({type(e).__name__}: {e})", hint=HINT
        ) from e


def check_shard(shard: Path, sidecar: SidecarFile, tokenizer: Any) -> None:
    """Ids, token counts and (with a tokenizer) tokens of one sidecar against the samples of its shard."""
    rows = {row["id"]: (f"{shard}:{n}", row) for n, row in read_jsonl(shard) if "id" in row}
    extra = [i for i in sidecar.ids if i not in rows]
    if extra:
        raise RecordError(
            f"{sidecar.path}: holds logprobs of sample {extra[0]!r}, which is not in {shard.name} "
            f"({len(extra)} such samples): the sidecar belongs to another shard",
            hint=HINT,
        )
    for sample_id, (where, row) in rows.items():
        if sample_id not in sidecar:
            raise RecordError(
                f"{where}: sample {sample_id!r} has no logprobs in {sidecar.path.name}", hint=HINT
            )
        check_sample(where, row, sidecar, tokenizer)


def check_sample(where: str, row: dict[str, Any], sidecar: SidecarFile, tokenizer: Any) -> None:
    from safetensors import SafetensorError

    try:
        topk = sidecar.get(row["id"])
        topk.validate(row["id"])
    except (SafetensorError, OSError, ValueError, KeyError) as e:  # torn or inconsistent arrays
        raise RecordError(
            f"{sidecar.path}: sample {row['id']!r}: unreadable logprobs ({e})", hint=HINT
        ) from e
    stored = topk.token_ids.tolist()
    if len(stored) != row.get("num_completion_tokens"):
        raise RecordError(
            f"{where}: sample {row['id']!r}: {sidecar.path.name} holds {len(stored)} tokens, the sample has "
            f"num_completion_tokens {row.get('num_completion_tokens')}",
            hint=HINT,
        )
    if tokenizer is None or not isinstance(row.get("completion"), str):
        return
    expected = tokenizer.encode(row["completion"], add_special_tokens=False)
    stopped_on = stored[-1] if stored else None
    if row.get("finish_reason") == "stop" and stopped_on in tokenizer.all_special_ids:
        expected.append(stopped_on)  # the EOS the engine stopped on is stored, not in the text
    first = next((i for i, (a, b) in enumerate(zip(expected, stored, strict=False)) if a != b), None)
    if first is not None or len(expected) != len(stored):
        at = first if first is not None else min(len(expected), len(stored))
        raise RecordError(
            f"{where}: sample {row['id']!r}: token {at} of {sidecar.path.name} is "
            f"{stored[at] if at < len(stored) else 'missing'}, the completion's token is "
            f"{expected[at] if at < len(expected) else 'missing'}: the sidecar is not this completion's",
            hint=HINT,
        )
