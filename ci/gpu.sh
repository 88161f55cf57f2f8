#!/usr/bin/env bash
# The GPU-marked tests on a CUDA machine: every cupy case must run (a missing GPU fails).
# Then `python ci/gpu_verify.py` checks every GPU path end to end as a user runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
export HANDGRAD_REQUIRE_GPU=1
export CUBLAS_WORKSPACE_CONFIG=:4096:8
python -m pytest -q -m gpu -rs "$@"
