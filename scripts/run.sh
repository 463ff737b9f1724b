#!/usr/bin/env bash
# Set up (idempotent) and run Cap in Discord; settings come from .env (see .env.example).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cap-bot "${@:-run}"
