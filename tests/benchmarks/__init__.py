"""The benchmarks' smoke tests: each runs a module as `make bench` would, tiny."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).parents[2]


def run_benchmark(*arguments: str) -> str:
    """`python -m ARGUMENTS` from the checkout; its stdout, once it has exited 0."""
    result = subprocess.run(
        [sys.executable, "-m", *arguments],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def table_rows(output: str) -> list[str]:
    """The first cell of every row of the Markdown table a benchmark printed."""
    rows = [line for line in output.splitlines() if line.startswith("| ")][2:]
    return [row.split(" | ")[0][2:] for row in rows]
