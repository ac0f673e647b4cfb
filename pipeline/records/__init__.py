"""Records between stages (the contract in DESIGN.md): what a stage reads and writes, and how.

    schema.py      Problem, Sample, DataSource and the row checks (errors name file, line and field)
    read.py        files, folders of shards and Hub datasets as rows, Problems and Samples
    write.py       atomic file writes, JSONL/JSON writers, numbered shards
    manifest.py    manifest.json, written last: the mark that an output folder is complete
    logprobs.py    top-k logprob sidecars beside sample shards (generate writes them, filter and kd read them)
    benchmarks.py  public benchmarks read as Problems (eval scores on them, the filter decontaminates against them)

The names below are the contract's public surface, re-exported for scripts and notebooks; the package's own
modules import from the module that defines each name.
"""

from pipeline.records.manifest import MANIFEST, read_manifest, write_manifest
from pipeline.records.read import load_problems, read_jsonl, read_rows, read_samples, read_unique_samples
from pipeline.records.schema import DataSource, Problem, RecordError, Sample, problem_id, to_row
from pipeline.records.write import ShardWriter, atomic_write, clean_temporaries, write_json, write_jsonl

__all__ = [
    "MANIFEST",
    "DataSource",
    "Problem",
    "RecordError",
    "Sample",
    "ShardWriter",
    "atomic_write",
    "clean_temporaries",
    "load_problems",
    "problem_id",
    "read_jsonl",
    "read_manifest",
    "read_rows",
    "read_samples",
    "read_unique_samples",
    "to_row",
    "write_json",
    "write_jsonl",
    "write_manifest",
]
