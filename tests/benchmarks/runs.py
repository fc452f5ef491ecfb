"""Running a benchmark as `make bench` does: a module of a checkout, in a process of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).parents[2]


def run_module(*arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m ARGUMENTS...` from the checkout's root, its output captured (2 minutes)."""
    return subprocess.run(
        [sys.executable, "-m", *arguments],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
