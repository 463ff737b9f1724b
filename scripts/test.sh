#!/usr/bin/env bash
# Everything the tests need on a fresh machine, then lint and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
