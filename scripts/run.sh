#!/usr/bin/env bash
# Set up (idempotent) and run Cap in Discord; settings come from .env (see .env.example).
# Runs in the repository (for its .env); --input/--output paths stay relative to where you called it from.
set -euo pipefail
caller_dir=$PWD
args=()
previous=""
for arg in "$@"; do
  case "$previous:$arg" in
    --input:/* | --output:/*) ;;
    --input:* | --output:*) arg="$caller_dir/$arg" ;;
  esac
  case "$arg" in
    --input=/* | --output=/*) ;;
    --input=* | --output=*) arg="${arg%%=*}=$caller_dir/${arg#*=}" ;;
  esac
  args+=("$arg")
  previous=$arg
done
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ((${#args[@]})); then
  exec .venv/bin/cap-bot "${args[@]}"
fi
exec .venv/bin/cap-bot run
