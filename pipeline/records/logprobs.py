"""The teacher top-k logprob sidecar: compact per-token arrays keyed by sample id, never JSON floats.

One safetensors file per Sample shard (`logprobs-00003.safetensors` beside `samples-00003.jsonl`), holding the
samples of that shard concatenated along the token axis:

    token_ids      int32   [T]      the completion's token ids (forced prefix and EOS included)
    token_logprobs float16 [T]      the teacher's logprob of each of those tokens
    topk_ids       int32   [T, k]   the teacher's k most likely token ids at each position, best first
    topk_logprobs  float16 [T, k]   their logprobs, from the unprocessed distribution (before temperature,
                                    top-p, top-k: vLLM's default `logprobs_mode="raw_logprobs"`)
    offsets        int64   [n + 1]  sample i owns rows offsets[i]:offsets[i+1]

and in the header metadata the sample ids (JSON list, same order) and k. Row counts equal each Sample's
`num_completion_tokens`. Readers open files lazily (`safe_open`), so a dataset of millions of tokens is not
loaded to read one sample. fp16 keeps ~3 significant digits of a logprob, enough for a distillation target;
values below fp16's range are clamped to -65504 instead of becoming -inf.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FP16_MIN = float(np.finfo(np.float16).min)


@dataclass
class TopK:
    """The teacher's logprobs for one sample's completion tokens."""

    token_ids: np.ndarray  # int32 [T]
    token_logprobs: np.ndarray  # float16 [T]
    topk_ids: np.ndarray  # int32 [T, k]
    topk_logprobs: np.ndarray  # float16 [T, k]

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.topk_ids.shape[1])

    def validate(self, sample_id: str) -> None:
        t = len(self)
        if (
            self.topk_ids.shape != (t, self.topk_ids.shape[1])
            or self.topk_logprobs.shape != self.topk_ids.shape
            or self.token_logprobs.shape != (t,)
        ):
            raise ValueError(f"sample {sample_id}: logprob arrays are not aligned ({self.shapes()})")

    def shapes(self) -> str:
        return ", ".join(
            f"{n} {tuple(getattr(self, n).shape)}"
            for n in ("token_ids", "token_logprobs", "topk_ids", "topk_logprobs")
        )


def to_fp16(values: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(values, dtype=np.float32), FP16_MIN).astype(np.float16)


def sidecar_path(shard_path: Path) -> Path:
    """`samples-00003.jsonl` -> `logprobs-00003.safetensors`."""
    index = shard_path.stem.rsplit("-", 1)[1]
    return shard_path.with_name(f"logprobs-{index}.safetensors")


def write_sidecar(path: Path, ids: Sequence[str], entries: Sequence[TopK]) -> None:
    """Write one sidecar file to `path` (callers wrap this in records.atomic_write)."""
    from safetensors.numpy import save_file

    if len(ids) != len(entries):
        raise ValueError("one TopK entry per sample id")
    k = entries[0].k if entries else 0
    for sample_id, entry in zip(ids, entries, strict=True):
        entry.validate(sample_id)
        if entry.k != k:
            raise ValueError(f"sample {sample_id}: k={entry.k}, expected {k}")
    lengths = [len(e) for e in entries]
    offsets = np.zeros(len(entries) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    def cat(name: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
        arrays = [getattr(e, name) for e in entries]
        return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(shape, dtype=dtype)

    tensors = {
        "token_ids": cat("token_ids", np.int32, (0,)),
        "token_logprobs": cat("token_logprobs", np.float16, (0,)),
        "topk_ids": cat("topk_ids", np.int32, (0, k)),
        "topk_logprobs": cat("topk_logprobs", np.float16, (0, k)),
        "offsets": offsets,
    }
    save_file(tensors, str(path), metadata={"ids": json.dumps(list(ids)), "k": str(k), "format": "topk-v1"})


class SidecarFile:
    """Lazy reader of one sidecar file."""

    def __init__(self, path: str | Path) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        self._file = safe_open(str(self.path), "np")
        meta = self._file.metadata() or {}
        self.ids: list[str] = json.loads(meta.get("ids", "[]"))
        self.k = int(meta.get("k", 0))
        self.offsets = self._file.get_tensor("offsets")
        self._index = {sample_id: i for i, sample_id in enumerate(self.ids)}

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._index

    def get(self, sample_id: str) -> TopK:
        i = self._index[sample_id]
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return TopK(
            *(
                self._file.get_slice(name)[lo:hi]
                for name in ("token_ids", "token_logprobs", "topk_ids", "topk_logprobs")
            )
        )


class Sidecar:
    """All sidecar files under a folder (a generate output, or a folder of shard outputs), keyed by sample id."""

    def __init__(self, path: str | Path) -> None:
        """`path`: a folder (all sidecars under it), one sidecar file, or a Sample shard (its own sidecar)."""
        self.files = [SidecarFile(p) for p in self.listing(Path(path))]

        self._where = {sample_id: f for f in self.files for sample_id in f.ids}

    @staticmethod
    def listing(path: Path) -> list[Path]:
        """The sidecar files of `path` (see `__init__`), in order."""
        if path.is_dir():
            return sorted(p for p in path.rglob("logprobs-*.safetensors") if not p.name.startswith("."))
        if path.suffix == ".safetensors":
            return [path]
        own = sidecar_path(path) if path.stem.startswith("samples-") else None
        return [own] if own is not None and own.exists() else []

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._where

    def __getitem__(self, sample_id: str) -> TopK:
        try:
            return self._where[sample_id].get(sample_id)
        except KeyError:
            raise KeyError(f"no teacher logprobs stored for sample {sample_id!r}") from None

    def ids(self) -> Iterator[str]:
        return iter(self._where)

    @property
    def k(self) -> int:
        return self.files[0].k if self.files else 0
