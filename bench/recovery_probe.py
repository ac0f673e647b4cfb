"""Where a student's recovery fails on the toy task v2: each step of the repair, teacher-forced, per model.

    .venv/bin/python bench/recovery_probe.py MODEL [MODEL ...] [--problems 200]

For held-out problems with an error forced into the working (the same prefixes eval's `recovery:` uses), the right
continuation is `chk <inverse>=V V-N=D no` / `fix` / the right line / its passing check. Fed that continuation
token by token, what probability does each model give each step, given everything before it right:
  value    V, the check's own arithmetic on the wrong line (a model that copies the state's digit N instead,
           as in every error-free trace, writes a check that passes);
  diff     D = V - N;
  verdict  `no`;
  fix      `fix` after the failing check;
  line     the right column line after `fix`;
Each as the geometric mean over the step's tokens, then the mean over problems; plus `faked`, the probability
the model gives the state's digit N where V belongs (the check copied, not computed). A step near 1 for the
teacher and near 0 for a student is what that student was not taught.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
STEPS = ("value", "diff", "verdict", "fix", "line")


def continuation(
    a: int, b: int, op: str, column: int, prefix: str
) -> tuple[str, dict[str, tuple[int, int]], str]:
    """The right continuation of a forced prefix, the character span of each step in it, and the faked value."""
    from pipeline.toy.checks import FIX, _lines, check_line

    lines = _lines(a, b, op)
    target = [i for i, line in enumerate(lines) if "=" in line][column]
    bad = prefix.rstrip("\n").rsplit("\n", 1)[1]
    failing, right = check_line(lines[target - 1], bad), lines[target]
    head, rest = failing.split("=", 1)  # "chk 6-1-0", "5 5-6=-1 no"
    value, tail = rest.split(" ", 1)  # "5", "5-6=-1 no"
    want, rest = tail[len(value) + 1 :].split("=")  # tail is "V-N=D no": N, "D no"
    diff = rest.split(" ")[0]
    text = f"{failing}\n{FIX}\n{right}\n{check_line(lines[target - 1], right)}\n"
    at_value = len(head) + 1
    at_diff = failing.index("=", at_value + len(value)) + 1
    at_verdict = failing.rindex(" ") + 1
    spans = {
        "value": (at_value, at_value + len(value)),
        "diff": (at_diff, at_diff + len(diff)),
        "verdict": (at_verdict, len(failing)),
        "fix": (len(failing) + 1, len(failing) + 1 + len(FIX)),
        "line": (len(failing) + len(FIX) + 2, len(failing) + len(FIX) + 2 + len(right)),
    }
    return text, spans, want


def probe(path: str, problems: int) -> dict[str, float]:
    """The mean probability of each step of the repair under the model at `path`."""
    import torch
    from methods import Evaluator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.eval.recovery import PREFIX, operands

    tok = AutoTokenizer.from_pretrained(REPO / "data/toy-teacher")  # every toy student's tokenizer
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    # eval's forced errors and their prompts, as bench/methods.py scores R
    forced = Evaluator(tok, limit=problems)
    sums: dict[str, float] = dict.fromkeys((*STEPS, "faked"), 0.0)
    for p, head in zip(forced.forced, forced.forced_prompts, strict=True):
        a, b, op = operands(p)
        text, spans, want = continuation(a, b, op, p.metadata["column"], p.metadata[PREFIX])
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = torch.tensor([head + enc["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        own = logp[len(head) - 1 :].gather(-1, ids[0, len(head) :, None])[:, 0]
        for step, (start, end) in spans.items():
            idx = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if s < end and e > start]
            sums[step] += math.exp(own[idx].mean().item())
        first = spans["value"][0]  # the faked check: the state's digit where the computed value belongs
        fake = tok.encode(want, add_special_tokens=False)[0]
        at = next(i for i, (s, e) in enumerate(enc["offset_mapping"]) if s <= first < e)
        sums["faked"] += math.exp(logp[len(head) - 1 + at, fake].item())
    return {k: v / len(forced.forced) for k, v in sums.items()} | {"problems": len(forced.forced)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--problems", type=int, default=200)
    args = parser.parse_args()
    print(f"{'model':50} " + " ".join(f"{k:>8}" for k in (*STEPS, "faked")))
    for path in args.models:
        got: dict[str, Any] = probe(path, args.problems)
        print(f"{path[-50:]:50} " + " ".join(f"{got[k]:8.3f}" for k in (*STEPS, "faked")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
