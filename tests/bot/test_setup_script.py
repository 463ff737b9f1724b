"""scripts/setup.sh against stand-ins for apt, dpkg and python: what it installs and when it makes the venv."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup.sh"

# Each stand-in appends what it was asked to $LOG. dpkg-query knows the packages in $INSTALLED.
STUBS = {
    "dpkg-query": 'for p in $INSTALLED; do [[ "${@: -1}" == "$p" ]] && { echo "install ok installed"; exit 0; }; done\n'
    "exit 1",
    "apt-get": 'echo "apt-get $*" >> "$LOG"',
    "sudo": '"$@"',
    # python3: ensurepip only when $ENSUREPIP=1; `-m venv` makes a .venv whose pip works.
    "python3": 'if [[ "$1" == "-c" ]]; then [[ "$ENSUREPIP" == 1 ]]; exit; fi\n'
    'if [[ "$1 $2" == "-m venv" ]]; then\n'
    '  echo "venv ${*:3}" >> "$LOG"; rm -rf .venv; mkdir -p .venv/bin; cp "$STUBS/venv-python" .venv/bin/python\n'
    "  touch .venv/pip\n"
    "fi",
    # .venv/bin/python: `-m pip` works only in a venv made whole (with pip).
    "venv-python": '[[ -e .venv/pip ]] || exit 1\n[[ "$3" == install ]] && echo "pip install" >> "$LOG"\nexit 0',
}


def run_setup(tmp_path: Path, *, ensurepip: bool, venv: str | None) -> list[str]:
    """Run a copy of setup.sh --dev in tmp_path/repo; venv: None (none), "broken" (no pip) or "whole"."""
    stubs, repo = tmp_path / "stubs", tmp_path / "repo"
    stubs.mkdir()
    for name, body in STUBS.items():
        (stubs / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (stubs / name).chmod(0o755)
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, repo / "scripts" / "setup.sh")
    if venv is not None:
        (repo / ".venv" / "bin").mkdir(parents=True)
        shutil.copy(stubs / "venv-python", repo / ".venv" / "bin" / "python")
        if venv == "whole":
            (repo / ".venv" / "pip").touch()
    log = tmp_path / "log"
    log.touch()
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "STUBS": str(stubs),
        "LOG": str(log),
        "INSTALLED": "libopus0 espeak-ng sox",
        "ENSUREPIP": "1" if ensurepip else "0",
    }
    env.pop("PYTHON", None)
    subprocess.run(["bash", "scripts/setup.sh", "--dev"], cwd=repo, env=env, check=True, capture_output=True)
    return log.read_text().splitlines()


@pytest.mark.parametrize("venv", [None, "broken"])
def test_debians_python_without_ensurepip_gets_python3_venv_and_a_whole_venv(tmp_path: Path, venv) -> None:
    log = run_setup(tmp_path, ensurepip=False, venv=venv)
    installs = [line for line in log if line.startswith("apt-get install")]
    assert len(installs) == 1 and installs[0].endswith(" python3 python3-venv")
    assert log[-2:] == ["venv --clear .venv", "pip install"]  # a venv left without pip is made again


def test_a_machine_with_everything_changes_nothing_but_the_install(tmp_path: Path) -> None:
    assert run_setup(tmp_path, ensurepip=True, venv="whole") == ["pip install"]
