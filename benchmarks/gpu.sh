#!/usr/bin/env bash
# The one-command GPU benchmark (benchmarks/gpu.py): run from the repository root on a GPU machine,
#   bash benchmarks/gpu.sh [--peak-tflops T]
# builds the environment if needed (make's stamp), prints one table, writes outputs/gpu_benchmark.json.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s .venv/.installed  # the environment (pip install -e .[dev]) unless it exists
mkdir -p outputs
exec .venv/bin/python benchmarks/gpu.py --out outputs/gpu_benchmark.json "$@"
