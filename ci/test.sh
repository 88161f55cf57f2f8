#!/usr/bin/env bash
# Lint and the whole test suite (CPU; cupy cases skip without a GPU). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m ruff check .
python -m mypy  # the backend switch and the math core ([tool.mypy] in pyproject.toml)
status=0
python -m pytest -q "$@" || status=$?
# pytest exits 5 when it collected no test; a filtered run with nothing to do is not a failure.
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests"
    status=0
fi
exit "$status"
