#!/usr/bin/env bash
# The paper's sampling grid: Gemma2-9B (WC) vs Gemma2-27B (SE) x MATH, GSM8K x low, high budget.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" run_sample.py -m experiment=paper "$@"
