#!/usr/bin/env bash
# Sampling stage of the pretrained-pair study: SmolLM2-135M (WC) vs Gemma-3-270M (SE), low and high budget.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" run_sample.py -m experiment=pretrained model=smollm2_135m,gemma3_270m budget=low,high "$@"
