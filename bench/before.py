"""The code before a change, run beside the code after it in the same bench run.

Figures on a shared or virtual machine move by 2x between runs, so a before/after claim needs both measured
in one run, alternated. `tree(ref)` unpacks the repository at `ref` (git archive) into a temporary
directory; a bench then runs that tree's own child script (its `--child` mode) next to its own, with the
same Python and packages. BEFORE_REF is the last commit before issue 14's performance work.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE_REF = "eb19fa9"  # main before issue 14 (twice the calls per core, barge-in at the detector's speed)
_trees: dict[str, Path] = {}


def tree(ref: str | None = BEFORE_REF) -> Path | None:
    """The repository at `ref`, unpacked once per process; None when `ref` is None or unknown (no git)."""
    if not ref:
        return None
    if ref in _trees:
        return _trees[ref]
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"], check=True,
                             capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    target = Path(tempfile.gettempdir()) / f"cap-bench-{sha[:12]}"
    if not (target / "bench").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    _trees[ref] = target
    return target


def script(name: str, before: Path | None) -> str:
    """Path of bench script `name` in the tree `before`, or in this one."""
    return str((before or ROOT) / "bench" / name)
