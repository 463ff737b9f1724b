#!/usr/bin/env bash
# Everything the tests need on a fresh machine, then lint and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# The storage, tools and export tests also run on PostgreSQL: a Debian server on 127.0.0.1 (installed and
# started when missing). Failing to start it fails the run; only a developer may opt out (CAP_TEST_POSTGRES=0).
if [[ "${CAP_TEST_POSTGRES:-1}" == "0" && "${CI:-}" != "true" ]]; then
  echo "test: CAP_TEST_POSTGRES=0, the PostgreSQL variants will be skipped" >&2
else
  started=$SECONDS
  TEST_DATABASE_URL=$(bash scripts/ci_postgres.sh) || { echo "test: PostgreSQL could not be started" >&2; exit 1; }
  [[ "$TEST_DATABASE_URL" == postgresql+psycopg://* && "$TEST_DATABASE_URL" != *$'\n'* ]] \
    || { echo "test: scripts/ci_postgres.sh printed something other than one database URL" >&2; exit 1; }
  export TEST_DATABASE_URL
  echo "test: PostgreSQL ready in $((SECONDS - started)) s" >&2
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
