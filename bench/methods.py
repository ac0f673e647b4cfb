"""Continued SFT, offline KD and on-policy distillation (OPD) from the same early SFT checkpoint: what each costs.

    .venv/bin/python bench/methods.py [--seeds 0 1 2] [--arms sft kd opd ...] [--sweep]     (make bench-methods)

Every arm starts from the demo's SFT student (runs/demo/sft: 66.5% held-out on task v2, R 0%, well below the
teacher's 100% and R 97%; made here with the demo's generate and filter when missing; `--start` another) and
learns the toy task (v2: checks and fixes) from the committed toy teacher:
  sft  continues SFT on the teacher's filtered traces (runs/demo/filter: the filter beside START), 16 a step, seeded order;
       teacher cost = the completion tokens the teacher *generated* for the traces trained on (decode; a lower
       bound: the traces the filter dropped cost the teacher too);
  kd   the same traces in the same order with the teacher's stored top-5 logprobs (`distill kd`'s trainer,
       recipes/demo/kd.yaml's loss): the same decode cost, the logprobs came with the generation;
  opd  `distill opd`'s trainer (recipes/demo/opd.yaml), 8 rollouts a step on the training problems; teacher cost =
       the completion tokens the teacher *scored* (prefill only; the student decodes its own rollouts);
  kd-relation, kd-self, kd-mutual, opd-self  issue #24's methods, each its recipes/demo/<arm>.yaml's loss with the
       optimiser of the kd (SFT's) or opd arm; an online teacher's scoring of each token read is prefill; a
       self-distilled teacher (the student's own model) and a mutual peer cost no teacher tokens;
  kd-fusion  kd's traces with the target the teacher's stored top-5 (0.7) fused with a second teacher's (0.3):
       the start student, scoring every teacher sample once (`generate mode: score`, prefill);
  sft-t1, opd-clean  issue #23's controls (`--controls`, make bench-controls: with sft and opd into
       bench/controls.json/png): SFT on the teacher's samples at temperature 1.0 (same problems, the demo's filter),
       and OPD whose teacher was trained like the committed one but on checked traces with no injected error (it
       never saw a failing check or a fix); both made by the bench under runs/bench-methods when absent;
Every `--every` steps a callback scores the live student greedily on 200 held-out problems (math-verify), with
the distinct training problems and teacher tokens used so far, the student tokens trained on (SFT: every trace
token read, again each epoch; OPD: its rollouts' tokens, each read once) and the training seconds (evaluation
excluded).
For each method: mean and spread over seeds of the problems, teacher decode and prefill tokens, student tokens and
seconds needed to reach 95% of the teacher's held-out accuracy, each on its own axis. Target (issues #11, #23):
OPD needs <= 1/3 of SFT's teacher tokens and problems. `--arms` picks the methods (default sft kd opd).
Each run is its own process on one thread; two runs go side by side (2 cores).
`--sweep` first runs seed 0 of each arm over learning rates and schedules (and OPD's loss) and records them (ARMS
holds what the recorded sweep chose). `--report-only` summarises the runs already in runs/bench-methods.
Writes bench/methods.json and bench/methods.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
START = REPO / "runs/demo/sft"
OUT = REPO / "runs/bench-methods"
HELDOUT = 200
SFT_BATCH, OPD_BATCH = 16, 8
ARMS = {  # what the sweep chose (bench/RESULTS.md records the sweep); --sweep re-runs it
    "sft": {"lr": 1.0e-3, "schedule": "constant", "steps": 600, "every": 100},
    "kd": {"lr": 1.0e-3, "schedule": "constant", "steps": 600, "every": 100},  # SFT's, the loss the demo's
    "opd": {"lr": 3.0e-4, "schedule": "cosine", "steps": 300, "every": 50, "loss": "jsd_top20", "beta": 1.0},
}
# issue #24's methods: SFT's optimiser (kd-*) or OPD's (opd-*), the loss of their recipes/demo/<arm>.yaml
ARMS.update({arm: dict(ARMS["kd"]) for arm in ("kd-relation", "kd-self", "kd-mutual", "kd-fusion")})
ARMS["opd-self"] = dict(ARMS["opd"])
# the peer continues too: the demo's KD student (same shape, its own training) rather than an untrained one
ARMS["kd-mutual"]["overrides"] = ["kd.mutual.peer={demo}/kd"]  # {demo}: the start's demo run (START's folder)
# the demo task has one teacher: the second is the start student itself, scoring the teacher's samples once
# (`generate mode: score`, recipes/demo/score.yaml), fused 0.3 beside the teacher's stored top-5 at 0.7
SCORES = OUT / "score-start"
ARMS["kd-fusion"]["overrides"] = [f"kd.teachers=[{{weight: 0.7}}, {{weight: 0.3, scores: {SCORES}}}]"]
# issue #23's controls: SFT on the teacher's samples at temperature 1.0 (the same problems, generated and
# filtered as the demo does, made by the bench); OPD with a teacher trained like the committed one on checked
# traces without injected errors (so it never saw a failing check or a fix)
T1 = OUT / "t1"
CLEAN = OUT / "teacher-clean"
ARMS["sft-t1"] = {**ARMS["sft"], "traces": str(T1 / "filter")}
ARMS["opd-clean"] = {**ARMS["opd"], "teacher": str(CLEAN / "teacher")}
CONTROLS = ["sft", "sft-t1", "opd", "opd-clean"]
COLORS = {
    "sft": "tab:blue",
    "kd": "tab:orange",
    "opd": "tab:green",
    "kd-relation": "tab:red",
    "kd-self": "tab:purple",
    "kd-mutual": "tab:brown",
    "opd-self": "tab:olive",
    "kd-fusion": "tab:cyan",
    "sft-t1": "tab:pink",
    "opd-clean": "tab:gray",
}
COSTS = ("problems", "teacher_decode", "teacher_prefill", "student_tokens", "seconds")
SWEEP = {  # seed 0, 300 OPD / 600 SFT steps
    "sft": [{"lr": 1e-3, "schedule": "constant"}, {"lr": 2e-3, "schedule": "cosine"}],
    "opd": [
        {"lr": 3e-4, "schedule": "constant", "loss": "sampled_reverse_kl"},
        {"lr": 1e-4, "schedule": "constant", "loss": "sampled_reverse_kl"},
        {"lr": 1e-4, "schedule": "constant", "loss": "jsd_full"},
        {"lr": 1e-4, "schedule": "constant", "loss": "jsd_top20"},
    ],
}


# --- one run (a child process) ---------------------------------------------------------------------------


class Evaluator:
    """Greedy held-out accuracy of a live model (prompts as generate renders them, answers by math-verify), its
    first-pass column error rate on those answers, and its recovery R: the same problems with an error forced
    into the working (pipeline/eval/recovery.py), continued greedily, judged from the operands."""

    def __init__(self, tokenizer: Any, limit: int = HELDOUT) -> None:
        from pipeline.eval.recovery import PREFIX, RecoveryConfig, forced_problems
        from pipeline.prompts import build_messages, load_prompt, prompt_ids
        from pipeline.records.read import load_problems
        from pipeline.records.schema import DataSource

        problems = load_problems(DataSource(path=str(REPO / "data/toy/heldout.jsonl"), limit=limit))
        template = load_prompt("math-r1-v1")
        self.tokenizer, self.problems = tokenizer, problems
        self.prompts = [prompt_ids(tokenizer, build_messages(template, p.problem)) for p in problems]
        self.forced = forced_problems(RecoveryConfig("toy"), problems)
        self.forced_prompts = [
            prompt_ids(tokenizer, build_messages(template, p.problem))
            + tokenizer.encode(p.metadata[PREFIX], add_special_tokens=False)
            for p in self.forced
        ]

    def greedy(self, model: Any, prompts: list[list[int]]) -> list[str]:
        import torch

        width = max(map(len, prompts))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                max_new_tokens=200,
                do_sample=False,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=pad,
            )
        model.train(was_training)
        return self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)

    def __call__(self, model: Any) -> dict[str, float | None]:
        from pipeline.eval.recovery import first_pass_error_rate, operands
        from pipeline.filter.math_grader import grade
        from pipeline.filter.parse import gradable_text
        from pipeline.toy.checks import recovered

        texts = self.greedy(model, self.prompts)
        right = [
            bool(grade(gradable_text(t), p.answer).correct) for t, p in zip(texts, self.problems, strict=True)
        ]
        rows = [{"problem_id": p.id, "completion": t} for t, p in zip(texts, self.problems, strict=True)]
        continued = self.greedy(model, self.forced_prompts)
        fixed = [
            recovered(t, *operands(p), p.metadata["column"])
            for t, p in zip(continued, self.forced, strict=True)
        ]
        return {
            "accuracy": sum(right) / len(right),
            "first_pass_error_rate": first_pass_error_rate(rows, self.problems),
            "recovery_rate": sum(fixed) / len(fixed),
        }


def curve_callback(evaluate: Evaluator, every: int, costs: Any, points: list[dict[str, Any]]) -> Any:
    """A TrainerCallback recording (step, accuracy, problems, teacher decode and prefill tokens, student tokens,
    training seconds) every `every` steps."""
    from transformers import TrainerCallback

    class Curve(TrainerCallback):
        started, evaluating = 0.0, 0.0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.started = time.perf_counter()
            self.record(state, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0:
                self.record(state, model)

        def record(self, state, model):
            seconds = time.perf_counter() - self.started - self.evaluating
            t0 = time.perf_counter()
            measured = evaluate(model)
            self.evaluating += time.perf_counter() - t0
            problems, decode, prefill, read = costs(state.global_step)
            points.append(
                {
                    "step": state.global_step,
                    **measured,
                    "problems": problems,
                    "teacher_decode": decode,
                    "teacher_prefill": prefill,
                    "teacher_tokens": decode + prefill,
                    "student_tokens": read,
                    "seconds": round(seconds, 2),
                }
            )
            print(json.dumps(points[-1]), flush=True)

    return Curve()


def sft_trainer(run: dict[str, Any], seed: int, out: Path) -> tuple[Any, Any]:
    """The sft stage's trainer continuing from START on the filter's traces in a seeded order; and its costs."""
    from pipeline.train.sft.stage import build_trainer

    data = out / "data" / "train-00000.parquet"
    costs = trace_costs(shuffled_traces(seed, data, Path(run.get("traces", START.parent / "filter"))))
    trainer, _ = build_trainer(sft_config(run, seed, data, out))
    return trainer, costs


def kd_trainer(run: dict[str, Any], seed: int, out: Path, recipe: str = "kd") -> tuple[Any, Any]:
    """The kd stage's trainer (recipes/demo/<recipe>.yaml's loss) on SFT's ordered traces, with SFT's optimiser
    and batch: the arms differ only in the loss. Costs: SFT's (the stored logprobs came with the generation),
    plus, for an online teacher other than the student's own model, every token it reads scored (prefill)."""
    from pipeline.preflight import load_tokenizer
    from pipeline.train.kd.stage import build_kd_trainer, load_teacher

    data = out / "data" / "train-00000.parquet"
    traces = trace_costs(shuffled_traces(seed, data))
    cfg = sft_config(run, seed, data, out, stage=recipe)
    online = cfg.kd.teacher == "online"
    trainer, _ = build_kd_trainer(cfg, load_teacher(cfg, load_tokenizer(cfg)) if online else None)
    scored = online and not cfg.kd.self_distill
    # a stored second teacher scored each trace once, as it was generated (the start student: prefill)
    fused = any(t.scores for t in cfg.kd.teachers or [])

    def costs(step: int) -> tuple[int, int, int, int]:
        problems, decode, _, read = traces(step)
        return problems, decode, read if scored else decode if fused else 0, read

    return trainer, costs


def shuffled_traces(seed: int, path: Path, source: Path | None = None) -> Any:
    """A filter's traces (by default the one START learned from) in a seeded random order, written to `path` (the
    order SFT trains in); the table."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(sorted(((source or START.parent / "filter") / "data").glob("*.parquet")))
    order = np.random.default_rng(seed).permutation(table.num_rows)
    table = table.take(order)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return table


def trace_costs(table: Any) -> Any:
    """step -> (distinct problems, teacher-generated tokens, student tokens read) of the traces trained on by then,
    SFT_BATCH a step; the traces are read again each epoch, which costs the teacher nothing more."""
    import numpy as np

    tokens = np.cumsum(table.column("num_completion_tokens").to_numpy())
    first_seen, seen = [], set()
    for pid in table.column("problem_id").to_pylist():
        seen.add(pid)
        first_seen.append(len(seen))

    def costs(step: int) -> tuple[int, int, int, int]:
        epochs, rest = divmod(step * SFT_BATCH, table.num_rows)
        read = int(epochs * tokens[-1] + (tokens[rest - 1] if rest else 0))
        n = min(step * SFT_BATCH, table.num_rows)
        return (first_seen[n - 1], int(tokens[n - 1]), 0, read) if n else (0, 0, 0, 0)

    return costs


def sft_config(run: dict[str, Any], seed: int, data: Path, out: Path, stage: str = "sft") -> Any:
    """recipes/demo/{stage}.yaml from START on the ordered traces in `data`: SFT_BATCH a step, in order, no
    packing."""
    from pipeline.config import load_config
    from pipeline.train.kd.config import KDStageConfig
    from pipeline.train.sft.config import SFTStageConfig

    return load_config(
        KDStageConfig if stage.startswith("kd") else SFTStageConfig,
        str(REPO / f"recipes/demo/{stage}.yaml"),
        [
            f"model={START}",
            "from_scratch=false",
            f"data=[{{path: {data}}}]",
            f"output={out / 'model'}",
            f"trainer.learning_rate={run['lr']}",
            f"trainer.lr_scheduler_type={run['schedule']}",
            "trainer.lr_scheduler_kwargs={}",
            "trainer.warmup_steps=0",
            f"trainer.max_steps={run['steps']}",
            f"trainer.per_device_train_batch_size={SFT_BATCH}",
            "trainer.packing=false",
            "trainer.train_sampling_strategy=sequential",
            "trainer.save_strategy='no'",
            "trainer.disable_tqdm=true",
            f"trainer.seed={seed}",
            "trainer.logging_steps=100",
            *overrides(run),
        ],
    )


def overrides(run: dict[str, Any]) -> list[str]:
    """The arm's own recipe overrides, `{demo}` standing for the start's demo run (START's folder)."""
    return [o.replace("{demo}", str(START.parent)) for o in run.get("overrides", [])]


def opd_trainer(run: dict[str, Any], seed: int, out: Path, recipe: str = "opd") -> tuple[Any, Any]:
    """The opd stage's trainer from START (recipes/demo/<recipe>.yaml's teachers: the toy teacher, or for
    opd-self the student's frozen copy with the reference answer); its costs: the tokens its teacher scored."""
    from pipeline.config import load_config
    from pipeline.records.read import load_problems
    from pipeline.train.opd.config import OPDStageConfig
    from pipeline.train.opd.stage import build_trainer

    loss = {
        "jsd_full": ["opd.loss=jsd", "opd.support=full", f"trainer.beta={run.get('beta', 1.0)}"],
        "jsd_top20": [
            "opd.loss=jsd",
            "opd.support=topk",
            "opd.topk=20",
            f"trainer.beta={run.get('beta', 1.0)}",
        ],
    }.get(run.get("loss", ""), [])
    cfg = load_config(
        OPDStageConfig,
        str(REPO / f"recipes/demo/{recipe}.yaml"),
        [
            f"model={START}",
            f"output={out / 'model'}",
            f"problems.path={REPO / 'data/toy/train.jsonl'}",
            *(
                [f"teachers={{'*': {{model: {run.get('teacher', REPO / 'data/toy-teacher')}}}}}"]
                if recipe == "opd"
                else []
            ),
            f"trainer.learning_rate={run['lr']}",
            f"trainer.lr_scheduler_type={run['schedule']}",
            f"trainer.max_steps={run['steps']}",
            f"trainer.per_device_train_batch_size={run.get('batch', OPD_BATCH)}",
            "trainer.save_strategy='no'",
            "trainer.disable_tqdm=true",
            f"trainer.seed={seed}",
            "trainer.logging_steps=50",
            *loss,
            *overrides(run),
        ],
    )
    trainer = build_trainer(cfg, load_problems(cfg.problems))
    return trainer, lambda step: (len(trainer.costs.problems), 0, trainer.costs.tokens, trainer.costs.tokens)


def child(arm: str, run: dict[str, Any], seed: int, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    if arm.startswith("kd"):
        trainer, costs = kd_trainer(run, seed, out, recipe=arm)
    elif arm.startswith("sft"):
        trainer, costs = sft_trainer(run, seed, out)
    else:  # opd, opd-clean (opd's recipe, another teacher), opd-self
        trainer, costs = opd_trainer(run, seed, out, recipe="opd" if "teacher" in run else arm)
    points: list[dict[str, Any]] = []
    trainer.add_callback(curve_callback(Evaluator(trainer.processing_class), run["every"], costs, points))
    trainer.train()
    trainer.save_model(str(out / "model"))  # the final student, for probing what each method taught
    (out / "curve.json").write_text(json.dumps({"arm": arm, "seed": seed, "run": run, "points": points}))


# --- the comparison (the parent process) ----------------------------------------------------------------


def ensure_start() -> None:
    """The demo's generate, filter, student start and SFT student (START) when absent."""
    from pipeline.toy.demo import STUDENT_INIT

    distill = str(Path(sys.executable).with_name("distill"))
    steps = [
        (
            REPO / "runs/demo/generate/manifest.json",
            [distill, "generate", "--config", "recipes/demo/generate.yaml"],
        ),
        (
            REPO / "runs/demo/filter/manifest.json",
            [distill, "filter", "--config", "recipes/demo/filter.yaml"],
        ),
        (
            REPO / "runs/demo/student-init/config.json",
            [distill, *STUDENT_INIT],
        ),
        (
            START / "manifest.json",
            [distill, "sft", "--config", "recipes/demo/sft.yaml", "trainer.disable_tqdm=true"],
        ),
    ]
    for done, cmd in steps:
        if not done.exists():
            print("bench: making", done.relative_to(REPO), flush=True)
            subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def ensure_scores() -> None:
    """kd-fusion's second teacher: the start student's top-5 over the demo teacher's samples, once."""
    from pipeline.records.manifest import read_manifest

    made = read_manifest(SCORES) if SCORES.exists() else None
    if made and made["config"]["model"] == str(START):
        return
    print("bench: making", SCORES.relative_to(REPO), flush=True)
    shutil.rmtree(SCORES, ignore_errors=True)
    distill = str(Path(sys.executable).with_name("distill"))
    samples = START.parent / "generate"  # the teacher's samples behind START's traces
    cmd = [distill, "generate", "--config", "recipes/demo/score.yaml", f"model={START}", f"samples={samples}"]
    cmd.append(f"output={SCORES}")
    subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def ensure_controls(arms: list[str]) -> None:
    """The controls' inputs when an arm needs them and they are absent: the committed teacher's samples at
    temperature 1.0 on the demo's problems, filtered by the demo's filter; a teacher trained by `make
    toy-teacher-train` as the committed one was (same init, set size, recipe and seed) on checked traces with no
    injected error."""
    distill = str(Path(sys.executable).with_name("distill"))
    steps = []
    if "sft-t1" in arms:
        steps += [
            (
                T1 / "generate",
                ["generate", "--config", "recipes/demo/generate.yaml", "sampling.temperature=1.0"],
            ),
            (T1 / "filter", ["filter", "--config", "recipes/demo/filter.yaml", f"input={T1 / 'generate'}"]),
        ]
    for out, cmd in steps:
        if not (out / "manifest.json").exists():
            print("bench: making", out.relative_to(REPO), flush=True)
            subprocess.run([distill, *cmd, f"output={out}"], cwd=REPO, check=True)
    if "opd-clean" in arms and not (CLEAN / "teacher/manifest.json").exists():
        # make toy-teacher's own training, with no injected error
        print("bench: making", CLEAN.relative_to(REPO), flush=True)
        make = ["make", "-s", "toy-teacher-train", f"TOY_RUNS={CLEAN.relative_to(REPO)}", "TOY_ERROR_RATE=0"]
        subprocess.run(make, cwd=REPO, check=True)


def launch(arm: str, run: dict[str, Any], seed: int, name: str) -> tuple[subprocess.Popen, Path]:
    out = OUT / name
    log = (OUT / f"{name}.log").open("w")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        arm,
        "--run",
        json.dumps(run),
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--start",
        str(START),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env), out


def run_pairs(jobs: list[tuple[str, dict[str, Any], int, str]]) -> list[dict[str, Any]]:
    """Run the jobs two at a time (one per core); their curves in job order."""
    results, pending, running = [], list(jobs), []
    while pending or running:
        while pending and len(running) < 2:
            running.append(launch(*pending.pop(0)))
        time.sleep(2)
        for proc, out in [r for r in running if r[0].poll() is not None]:
            running.remove((proc, out))
            if proc.returncode != 0:
                raise SystemExit(f"bench: {out.name} failed; see {out}.log")
    for *_, name in jobs:
        results.append(json.loads((OUT / name / "curve.json").read_text()))
    return results


def teacher_scores(path: Path) -> dict[str, float | None]:
    """A teacher's greedy held-out accuracy, first-pass column errors and R, as the students are measured."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(path)
    return Evaluator(tok)(AutoModelForCausalLM.from_pretrained(path))


def trace_stats(source: Path) -> dict[str, Any]:
    """What a filter's traces hold: how many; how many `fix` a column line, split into repairs (the line after
    `fix` differs from the one checked: a first-pass error repaired) and false alarms (the same line written again:
    the check was wrong); mean completion tokens; and what the filter kept of the samples."""
    import pyarrow.parquet as pq

    from pipeline.records.manifest import read_manifest
    from pipeline.toy.checks import FIX

    table = pq.read_table(
        sorted((source / "data").glob("*.parquet")), columns=["completion", "num_completion_tokens"]
    )
    repairs = false_alarms = 0
    for messages in table.column("completion").to_pylist():
        lines = messages[-1]["content"].splitlines()  # the assistant turn
        for i in (i for i, line in enumerate(lines) if line == FIX and 2 <= i < len(lines) - 1):
            same = lines[i + 1] == lines[i - 2]  # the line checked, then the line written after `fix`
            false_alarms, repairs = false_alarms + same, repairs + (not same)
    return {
        "rows": table.num_rows,
        "repairs": repairs,
        "false_alarms": false_alarms,
        "mean_tokens": sum(table.column("num_completion_tokens").to_pylist()) / max(table.num_rows, 1),
        "filter_counts": read_manifest(source)["counts"],
    }


def reach(curve: dict[str, Any], threshold: float) -> dict[str, Any] | None:
    return next((p for p in curve["points"] if p["accuracy"] >= threshold), None)


def spread(values: list[float]) -> str:
    if not values:
        return "not reached"
    mean = statistics.mean(values)
    return (
        f"{mean:,.0f} ({min(values):,.0f}-{max(values):,.0f})"
        if mean >= 100
        else f"{mean:.1f} ({min(values):.1f}-{max(values):.1f})"
    )


def summarise(curves: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """At the target (95% of the teacher) and at lower accuracy levels above the start: what each method needed,
    on each cost axis, and each method's mean over SFT's where every seed of both reached the level."""
    arms = list(dict.fromkeys(c["arm"] for c in curves))
    start = max(c["points"][0]["accuracy"] for c in curves)  # levels the start checkpoint has not reached yet
    steps = [x for x in (0.6, 0.7, 0.8, 0.85, 0.9) if start < x < threshold]
    levels = {"target": threshold, **{f"{round(100 * x)}%": x for x in steps}}
    out: dict[str, Any] = {"threshold": threshold, "arms": arms, "levels": {}}
    for name, level in levels.items():
        table = {}
        for arm in arms:
            runs = [c for c in curves if c["arm"] == arm]
            got = [h for h in (reach(c, level) for c in runs) if h]
            table[arm] = {"reached": f"{len(got)}/{len(runs)}", "all": len(got) == len(runs)}
            table[arm].update({k: [h.get(k, 0) for h in got] for k in ("step", "teacher_tokens", *COSTS)})
        ratios = {}
        for arm in arms:
            if arm != "sft" and "sft" in table and table[arm]["all"] and table["sft"]["all"]:
                sft = table["sft"]
                ratios[arm] = {
                    k: statistics.mean(table[arm][k]) / max(statistics.mean(sft[k]), 1e-9)
                    for k in ("problems", "teacher_tokens", "student_tokens", "seconds")
                }
        out["levels"][name] = {"accuracy": level, "methods": table, "over_sft": ratios}
    last = {
        "final": lambda c: c["points"][-1],
        "best": lambda c: max(c["points"], key=lambda p: p["accuracy"]),
    }
    for key in ("accuracy", "recovery_rate", "first_pass_error_rate"):  # v2: does a method pass on repairs?
        out[f"start_{key}"] = curves[0]["points"][0].get(key)
        for which, pick in last.items():
            out[f"{which}_{key}"] = {
                arm: [pick(c).get(key) for c in curves if c["arm"] == arm] for arm in arms
            }
    return out


AXES = {
    "problems": "distinct training problems",
    "teacher_decode": "teacher tokens generated (decode: SFT, KD)",
    "teacher_prefill": "teacher tokens scored (prefill: OPD)",
    "student_tokens": "student tokens trained on (SFT/KD: each epoch again)",
    "seconds": "training seconds (one thread a run)",
}


def plot(curves: list[dict[str, Any]], threshold: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(AXES), figsize=(4.4 * len(AXES), 4.2))
    seeds = {
        arm: ", ".join(str(c["seed"]) for c in curves if c["arm"] == arm)
        for arm in dict.fromkeys(c["arm"] for c in curves)
    }
    first = {c["arm"]: id(c) for c in reversed(curves)}  # each arm's legend entry on its first curve
    for ax, (key, label) in zip(axes, AXES.items(), strict=True):
        for c in curves:
            if key.startswith("teacher_") and not any(p.get(key) for p in c["points"]):
                continue  # this method pays nothing on this axis
            ax.plot(
                [p.get(key, 0) for p in c["points"]],
                [p["accuracy"] for p in c["points"]],
                color=COLORS.get(c["arm"], "tab:gray"),
                alpha=0.7,
                label=f"{c['arm'].upper()} (seeds {seeds[c['arm']]})" if first[c["arm"]] == id(c) else None,
            )
        ax.axhline(threshold, color="gray", linestyle="--", label="95% of the teacher")
        ax.set(xlabel=label, ylabel="held-out accuracy (greedy)", ylim=(0, 1.02))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 4))
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(summary: dict[str, Any], teacher: float) -> None:
    print(f"\nteacher held-out accuracy {teacher:.3f}; target 95% of it = {summary['threshold']:.3f}")
    for name, level in summary["levels"].items():
        print(f"\nto reach {name} ({level['accuracy']:.3f}): mean (min-max) over the seeds that reached it")
        keys = ("step", *COSTS)
        print(f"{'method':6} {'reached':8} " + " ".join(f"{k.replace('_', ' '):>24}" for k in keys))
        for arm, m in level["methods"].items():
            print(f"{arm:6} {m['reached']:8} " + " ".join(f"{spread(m[k]):>24}" for k in keys))
        for arm, ratios in level["over_sft"].items():
            shown = ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())
            print(
                f"  {arm.upper()} / SFT: {shown}"
                + ("  (target: problems, teacher tokens <= 0.333)" * (arm == "opd"))
            )
    for which in ("final", "best"):
        for key in ("accuracy", "recovery_rate", "first_pass_error_rate"):
            got = summary.get(f"{which}_{key}") or {}
            print(
                f"{which} {key}",
                {arm: spread([100 * a for a in v if a is not None]) for arm, v in got.items()},
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["sft", "kd", "opd"], choices=sorted(ARMS))
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--run")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out")
    parser.add_argument("--start", type=Path, default=START, help="the SFT checkpoint both arms start from")
    parser.add_argument("--only", help="one exploratory run: ARM:NAME with --run JSON and --seed, no summary")
    parser.add_argument("--report-only", action="store_true", help="summarise the runs in runs/bench-methods")
    parser.add_argument(
        "--controls",
        action="store_true",
        help=f"issue #23's controls ({' '.join(CONTROLS)}) into bench/controls.json/png instead of --arms",
    )
    return parser.parse_args()


def run_only(only: str, run: str | None, seed: int | None) -> None:
    """One exploratory run, ARM:NAME, with `run` JSON over the arm's settings; its curve printed on one line."""
    arm, name = only.split(":")
    (curve,) = run_pairs([(arm, {**ARMS[arm], **json.loads(run or "{}")}, seed or 0, name)])
    print(" ".join(f"{p['step']}:{100 * p['accuracy']:.1f}" for p in curve["points"]))


def sweep(arms: dict[str, dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """Seed 0 of each arm over SWEEP's settings at half the steps: each run's best accuracy, printed too."""
    jobs = [
        (arm, {**arms[arm], **s, "steps": arms[arm]["steps"] // 2}, 0, f"sweep-{arm}-{i}")
        for arm in ("sft", "opd")
        for i, s in enumerate(SWEEP[arm])
    ]
    rows = [
        {
            "arm": c["arm"],
            "run": c["run"],
            "best_accuracy": max(p["accuracy"] for p in c["points"]),
            "reached_at": reach(c, threshold),
        }
        for c in run_pairs(jobs)
    ]
    for row in rows:
        print(json.dumps(row))
    return rows


def read_curve(name: str) -> dict[str, Any]:
    """A finished run's curve from runs/bench-methods."""
    return json.loads((OUT / name / "curve.json").read_text())


RESULTS = {  # where each comparison is written (.json, .png) and the plot's title
    "methods": (
        "bench/methods",
        "From the same SFT checkpoint: continued SFT, offline KD, on-policy distillation",
    ),
    "controls": (
        "bench/controls",
        "Controls from the same SFT checkpoint: SFT on T 0.6 / T 1.0 traces, OPD from the committed / a clean teacher",
    ),
}


def compare(
    seeds: list[int], arms_run: list[str], with_sweep: bool, report_only: bool, result: tuple[str, str]
) -> None:
    """The arms over the seeds against 95% of the teacher: `result` (RESULTS' path, title) .json and .png, the
    report."""
    result_to, title = result
    teachers = {"committed": teacher_scores(REPO / "data/toy-teacher")}
    teachers.update(
        {
            Path(ARMS[a]["teacher"]).parent.name: teacher_scores(Path(ARMS[a]["teacher"]))
            for a in arms_run
            if "teacher" in ARMS[a]
        }
    )
    teacher = teachers["committed"]["accuracy"]
    threshold = 0.95 * teacher
    arms = {k: dict(v) for k, v in ARMS.items()}
    out: dict[str, Any] = {"teacher_accuracy": teacher, "arms": arms}
    if len(teachers) > 1:  # a control's own teacher, measured like the students
        out["teachers"] = teachers
        print("teachers:", json.dumps(teachers))
    traces = {a: trace_stats(Path(ARMS[a]["traces"])) for a in arms_run if "traces" in ARMS[a]}
    if traces:
        traces = {"sft": trace_stats(START.parent / "filter"), **traces}
        out["traces"] = traces
        print("traces:", json.dumps(traces))
    if with_sweep and not report_only:
        out["sweep"] = sweep(arms, threshold)
    jobs = [(arm, arms[arm], seed, f"{arm}-seed{seed}") for seed in seeds for arm in arms_run]
    curves = [read_curve(name) for *_, name in jobs] if report_only else run_pairs(jobs)
    summary = summarise(curves, threshold)
    out.update(summary=summary, curves=curves)
    (REPO / f"{result_to}.json").write_text(json.dumps(out, indent=1))
    plot(curves, threshold, REPO / f"{result_to}.png", title)
    report(summary, teacher)


def main() -> int:
    global START
    args = parse_args()
    START = args.start.resolve()
    if args.child:
        child(args.child, json.loads(args.run), args.seed, Path(args.out))
        return 0
    ensure_start()
    OUT.mkdir(parents=True, exist_ok=True)
    if (args.only or "").startswith("kd-fusion:") or ("kd-fusion" in args.arms and not args.report_only):
        ensure_scores()
    arms = CONTROLS if args.controls else args.arms
    if not args.report_only:
        ensure_controls([*arms, (args.only or ":").split(":")[0]])
    if args.only:
        run_only(args.only, args.run, args.seed)
        return 0
    compare(
        args.seeds, arms, args.sweep, args.report_only, RESULTS["controls" if args.controls else "methods"]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
