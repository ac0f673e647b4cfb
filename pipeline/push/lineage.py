"""Where a stage output came from: the manifests, reports and eval results it points back to, read from disk.

    data = read_dataset_facts("runs/filter")     # the filter report, its teacher, the parquet columns
    facts = read_model_facts(Path("runs/sft"))   # the sft / kd manifest, its datasets, eval results

The cards are written from these facts. Anything that cannot be found (a dataset on the Hub, a folder that has
moved, no eval yet) is `None` or empty, never an error: a card says what is missing.

Read: the filter stage's manifest.json (`inputs`: the generate folder) and report.json (pipeline/filter/
report.py: input, kept, steps [{step, in, dropped, reasons}], verdicts, pass_rate, tokens.kept, sources); the
generate manifest (teacher, sampling, prompt); the sft / kd manifest; and the eval stage's results.json
(pipeline/eval/report.py; pass@1 etc. as fractions in [0, 1]):

  {models: [{model, label, metrics: {<benchmark>: {pass@1, pass@1_stderr, cons@k, n, mean_output_tokens,
  truncation_rate}}}], settings: {...}}
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.records.manifest import read_manifest
from pipeline.records.schema import RecordError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Teacher:
    """The generate stage's model and settings, from its manifest."""

    model: str
    sampling: dict[str, Any]
    prompt_template: str | None
    think_prefix: bool
    samples: int | None


@dataclass(frozen=True)
class FilterStep:
    step: str
    seen: int | None
    kept: int | None
    dropped: dict[str, int]


@dataclass(frozen=True)
class TokenStats:
    count: int
    mean: float
    p50: float
    p90: float
    max: int


@dataclass(frozen=True)
class DatasetFacts:
    """One dataset: a filter output folder (all fields reachable) or a Hub dataset (only `name`)."""

    name: str
    hub_id: str | None = None
    manifest: dict[str, Any] | None = None
    """The filter manifest, when the folder holds one."""
    total: int | None = None
    kept: int | None = None
    steps: list[FilterStep] = field(default_factory=list)
    teacher: Teacher | None = None
    examples: int | None = None
    """Rows in the dataset's parquet files."""
    sources: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, TokenStats] = field(default_factory=dict)
    """Lengths of the kept samples: `reasoning`, `answer`, `completion`."""
    teacher_pass: dict[str, Any] = field(default_factory=dict)
    """The teacher's per-problem pass rate: graded_problems, mean, solved_by_none, solved_by_all."""
    verdicts: dict[str, int] = field(default_factory=dict)
    columns: list[tuple[str, str]] = field(default_factory=list)
    example_user_turn: str | None = None
    """The user turn of the dataset's first row, as the student saw it in training."""

    @property
    def rejected(self) -> int | None:
        return self.total - self.kept if self.total is not None and self.kept is not None else None

    @property
    def kept_fraction(self) -> float | None:
        return self.kept / self.total if self.kept is not None and self.total else None


@dataclass(frozen=True)
class EvalResults:
    path: str
    models: list[dict[str, Any]]
    benchmarks: list[str]
    settings: dict[str, Any]


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when there is no such file; a malformed one is an error."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object")
    return data


def read_teacher(folder: Path) -> Teacher | None:
    """The teacher of a generate output folder (or of its shards, which each hold a manifest)."""
    for manifest in map(read_manifest, [folder, *sorted(folder.glob("shard-*"))]):
        if manifest and manifest.get("stage") == "generate" and manifest.get("config", {}).get("model"):
            config = manifest["config"]
            prompt = config.get("prompt") or {}
            return Teacher(
                model=config["model"],
                sampling=config.get("sampling") or {},
                prompt_template=prompt.get("template"),
                think_prefix=bool(prompt.get("think_prefix")),
                samples=(manifest.get("counts") or {}).get("samples"),
            )
    return None


def input_paths(manifest: dict[str, Any]) -> list[Path]:
    """The local folders a manifest names as its inputs (a list of paths, or a dict whose values are paths)."""
    inputs = manifest.get("inputs") or []
    values = inputs.values() if isinstance(inputs, dict) else inputs
    return [Path(v) for v in values if isinstance(v, str) and Path(v).is_dir()]


def read_steps(report: dict[str, Any]) -> list[FilterStep]:
    steps = []
    for entry in report.get("steps") or []:
        seen, dropped = entry.get("in"), entry.get("dropped")
        kept = seen - dropped if isinstance(seen, int) and isinstance(dropped, int) else None
        steps.append(FilterStep(str(entry.get("step")), seen, kept, dict(entry.get("reasons") or {})))
    return steps


def read_tokens(report: dict[str, Any]) -> dict[str, TokenStats]:
    kept = (report.get("tokens") or {}).get("kept") or {}
    fields = ("count", "mean", "p50", "p90", "max")
    return {
        k: TokenStats(*(v[f] for f in fields)) for k, v in kept.items() if v and all(f in v for f in fields)
    }


def parquet_facts(folder: Path) -> dict[str, Any]:
    """Rows, column types and sources of a folder's parquet files (what `load_dataset` will see)."""
    import pyarrow.parquet as pq

    files = sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        return {}
    first = pq.ParquetFile(files[0])
    schema = first.schema_arrow
    facts: dict[str, Any] = {
        "examples": first.metadata.num_rows + sum(pq.ParquetFile(f).metadata.num_rows for f in files[1:]),
        "columns": [(f.name, str(f.type)) for f in schema],
    }
    if "source" in schema.names:
        sources = pq.ParquetDataset(files).read(columns=["source"]).column("source").to_pylist()
        facts["sources"] = dict(Counter(sources).most_common())
    if "prompt" in schema.names:
        batch = next(first.iter_batches(batch_size=1, columns=["prompt"]), None)
        prompt = batch.column("prompt")[0].as_py() if batch is not None and batch.num_rows else None
        users = [m.get("content") for m in prompt or [] if isinstance(m, dict) and m.get("role") == "user"]
        if users and isinstance(users[-1], str):
            facts["example_user_turn"] = users[-1]
    return facts


def read_dataset_facts(path: str | Path, hub_id: str | None = None) -> DatasetFacts:
    """What a local dataset folder says about itself: its filter manifest and report, teacher and parquet files."""
    folder = Path(path)
    if not folder.is_dir():
        return DatasetFacts(name=str(path), hub_id=hub_id)
    manifest = read_manifest(folder)
    manifest = manifest if manifest and manifest.get("stage") == "filter" else None
    report = read_json(folder / "report.json") or {}
    counts = (manifest or {}).get("counts") or {}
    teachers = [read_teacher(p) for p in input_paths(manifest or {})]
    return DatasetFacts(
        name=str(path),
        hub_id=hub_id,
        manifest=manifest,
        total=report.get("input", counts.get("input")),
        kept=report.get("kept", counts.get("kept")),
        steps=read_steps(report),
        teacher=next((t for t in teachers if t), None),
        tokens=read_tokens(report),
        teacher_pass=report.get("pass_rate") or {},
        verdicts=report.get("verdicts") or counts.get("verdicts") or {},
        **parquet_facts(folder),
    )


def read_eval(path: Path) -> EvalResults:
    """The eval stage's results; a file that does not have its shape is an error naming the field."""
    data = read_json(path)
    if data is None:
        raise RecordError(f"{path}: no such eval results file")
    models = data.get("models")
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise RecordError(f"{path}: field 'models' must be a list of objects")
    benchmarks: list[str] = []
    for i, entry in enumerate(models):
        if not isinstance(entry.get("metrics"), dict):
            raise RecordError(f"{path}: models[{i}]: field 'metrics' must be an object")
        benchmarks += [b for b in entry["metrics"] if b not in benchmarks]
    return EvalResults(str(path), models, benchmarks, data.get("settings") or {})


def find_eval(folder: Path, manifest: dict[str, Any] | None, explicit: str | None) -> EvalResults | None:
    """`--eval PATH`, else `<model>/eval/results.json`, else a path in the manifest's `eval` field."""
    if explicit:
        return read_eval(Path(explicit))
    if (folder / "eval" / "results.json").is_file():
        return read_eval(folder / "eval" / "results.json")
    named = (manifest or {}).get("eval")
    return read_eval(Path(named)) if isinstance(named, str) and Path(named).is_file() else None


def checkpoint_loss(folder: Path) -> tuple[int | None, float | None]:
    """The step and last logged training loss of a Trainer checkpoint (from its trainer_state.json)."""
    state = read_json(folder / "trainer_state.json") or {}
    losses = [e["loss"] for e in state.get("log_history") or [] if "loss" in e]
    return state.get("global_step"), losses[-1] if losses else None


@dataclass(frozen=True)
class ModelFacts:
    """A student folder and everything its sft / kd manifest leads to."""

    folder: Path
    flavor: Literal["full", "merged", "adapter"]
    manifest: dict[str, Any]
    base: str
    """The base model as trained from: a Hub id or a local folder."""
    base_id: str | None
    """The base's Hub id, for metadata and loading snippets (None: a local folder with no known id)."""
    data: list[DatasetFacts]
    eval: EvalResults | None
    license: str | None

    @property
    def teacher(self) -> Teacher | None:
        return next((d.teacher for d in self.data if d.teacher), None)


def is_repo_id(name: str) -> bool:
    """`owner/name` that is not a local folder: what the Hub accepts as `base_model` or in `datasets`."""
    return bool(REPO_ID.match(name)) and ".." not in name and not Path(name).exists()


def training_manifest(folder: Path) -> tuple[dict[str, Any], bool]:
    """The sft / kd manifest of a model folder, or of its parent when the folder is the parent's `merged/`."""
    manifest = read_manifest(folder)
    if manifest and manifest.get("stage") in ("sft", "kd", "opd"):
        return manifest, False
    parent = read_manifest(folder.parent)
    if parent and parent.get("merged") and Path(parent["merged"]).resolve() == folder.resolve():
        return parent, True
    raise RecordError(
        f"{folder}: no manifest.json of the sft, kd or opd stage (a merged model's is in its parent)"
    )


def front_matter(text: str) -> dict[str, Any]:
    import yaml

    if not text.startswith("---"):
        return {}
    head = text[3:].split("\n---", 1)[0]
    data = yaml.safe_load(head)
    return data if isinstance(data, dict) else {}


def base_license(base: str) -> str | None:
    """The license in a base model's card, read offline: a local folder's README.md or the Hub cache's copy."""
    readme: Any = Path(base) / "README.md"
    if not readme.is_file() and is_repo_id(base):
        from huggingface_hub import try_to_load_from_cache

        readme = try_to_load_from_cache(base, "README.md")
    if not isinstance(readme, (str, Path)) or not Path(readme).is_file():
        return None
    license_ = front_matter(Path(readme).read_text(encoding="utf-8")).get("license")
    return str(license_) if license_ else None


def read_model_facts(
    folder: Path, base_id: str | None = None, eval_path: str | None = None, license_: str | None = None
) -> ModelFacts:
    manifest, merged = training_manifest(folder)
    config = manifest.get("config") or {}
    base = str(config.get("model") or "")
    adapter = (folder / "adapter_config.json").is_file()
    data = [
        read_dataset_facts(d["path"])
        if d.get("path")
        else DatasetFacts(name=str(d.get("hub")), hub_id=d.get("hub"))
        for d in config.get("data") or []
    ]
    return ModelFacts(
        folder=folder,
        flavor="adapter" if adapter else "merged" if merged else "full",
        manifest=manifest,
        base=base,
        base_id=base_id or (base if is_repo_id(base) else None),
        data=data,
        eval=find_eval(folder, manifest, eval_path),
        license=license_ or base_license(base),
    )
