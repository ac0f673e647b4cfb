"""Several opd teachers for one source, mixed per token with weights (multi-teacher fusion):

    teachers:
      "*":
        - {model: data/toy-teacher, weight: 0.7}
        - {server: {base_url: http://t1:8000/v1, model: qwq}, weight: 0.3}

Each member is an ordinary teacher (local or served, checked against the student's tokenizer on its own, under
the key `source[i]`); `MixedScorer` asks every member to score the same rollouts and mixes their answers:
the logprob of each sampled token is the exact mixture log sum_i w_i p_i(x) (every teacher returns its own
logprob of it), and the top-k is the fusion of their top-k (pipeline/train/kd/fusion.py: union, a teacher's
mass outside its own top-k in the tail) cut to the `opd.topk` most likely ids, the rest joining the tail.
"""

from __future__ import annotations

from typing import Any

from pipeline.train.opd.scores import Sequence, TokenScores


def flatten(teachers: dict[str, Any]) -> dict[str, Any]:
    """`source -> spec | [spec, ...]` as one spec per key: `source`, or `source[i]` for a list's members."""
    flat = {}
    for key, spec in teachers.items():
        if isinstance(spec, list):
            flat.update({f"{key}[{i}]": member for i, member in enumerate(spec)})
        else:
            flat[key] = spec
    return flat


def check_mixtures(cfg: Any) -> None:
    """Each listed mixture: at least one member, weights summing to a positive number; and TRL's full-vocabulary
    loss (one local teacher) cannot take a mixture."""
    for key, spec in cfg.teachers.items():
        if not isinstance(spec, list):
            continue
        for i, member in enumerate(spec):  # here, not in TeacherSpec: a union's error would hide it
            if not member.weight >= 0:
                raise ValueError(f"field 'teachers.{key}[{i}].weight': must be >= 0, got {member.weight}")
        total = sum(member.weight for member in spec)
        if not spec or not total > 0:
            raise ValueError(
                f"field 'teachers.{key}': the weights sum to {total}; list at least one teacher and give each a "
                "weight >= 0, at least one > 0"
            )
        if cfg.opd.loss == "jsd" and cfg.opd.support == "full":
            raise ValueError(
                f"field 'teachers.{key}': opd.support full is TRL's loss over one teacher; mixtures use "
                "opd.support: topk"
            )


def identities(cfg: Any) -> dict[str, str]:
    """Which model(s) teach each source, for the manifest, the model card and the resume check."""
    out = {}
    for key, spec in sorted(cfg.teachers.items()):
        if isinstance(spec, list):
            total = sum(m.weight for m in spec)
            out[key] = "fusion of " + ", ".join(f"{m.identity()} {m.weight / total:.2g}" for m in spec)
        else:
            out[key] = spec.identity()
    return out


class MixedScorer:
    """Teachers that score together as one (the opd trainer routes a source's rollouts to it)."""

    def __init__(self, members: list[Any], weights: list[float]) -> None:
        self.members, self.weights = members, weights
        self.name = "fusion of " + ", ".join(
            f"{m.name} {w:.2g}" for m, w in zip(members, weights, strict=True)
        )

    def check_ready(self, student_vocab: int) -> None:
        for member in self.members:
            member.check_ready(student_vocab)

    def score(self, sequences: list[Sequence], k: int) -> list[TokenScores]:
        from pipeline.train.kd.fusion import fuse_own, fuse_topk

        each = [member.score(sequences, k) for member in self.members]
        mixed = []
        for scores in zip(*each, strict=True):
            ids, lps = fuse_topk(
                [s.topk_ids for s in scores], [s.topk_logprobs for s in scores], self.weights
            )
            best = lps.topk(k, -1)  # the fused k most likely; the rest of the union joins the tail
            own = fuse_own([s.logprob for s in scores], self.weights)
            mixed.append(TokenScores(own, ids.gather(-1, best.indices).int(), best.values))
        return mixed


def mix(cfg: Any, teachers: dict[str, Any]) -> dict[str, Any]:
    """The trainer's teachers by `teachers` key: a listed source's members (built as `source[i]`) as one scorer."""
    out = {}
    for key, spec in cfg.teachers.items():
        if isinstance(spec, list):
            total = sum(m.weight for m in spec)
            members = [teachers[f"{key}[{i}]"] for i in range(len(spec))]
            out[key] = MixedScorer(members, [m.weight / total for m in spec])
        else:
            out[key] = teachers[key]
    return out
