#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, then a virtualenv with Cap installed.
# Usage: scripts/setup.sh [--dev]   (--dev adds the test tools and the packages the tests need)
set -euo pipefail
# Everything this script (and apt, pip) says goes to stderr: stdout belongs to the command run after it
# (`scripts/run.sh leads export > leads.csv`, the console's transcript).
exec 1>&2
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
want=(libopus0)
if [[ "${1:-}" == "--dev" ]]; then
  want+=(espeak-ng sox)
fi
# Debian's own python3 makes no virtualenv without python3-venv (it leaves out ensurepip); pyenv's and
# python.org's builds have it, so they need nothing from apt.
if ! command -v "$python" >/dev/null || ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  want+=(python3 python3-venv)
fi
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}"
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Also when an earlier run failed half-way (e.g. without ensurepip): .venv/bin/python exists but has no pip.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  echo "setup: creating the virtualenv .venv"
  "$python" -m venv --clear .venv
fi
extra=""
[[ "${1:-}" == "--dev" ]] && extra="[dev]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}" 2>&1 \
  | { grep -v "^WARNING: Location .* is ignored" || true; }
