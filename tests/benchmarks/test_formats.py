"""The format benchmark keeps working: a tiny run checks every stream exact and reports every
format without Redis (the Redis row needs --redis-url). Not a timing test."""

from __future__ import annotations

from benchmarks.formats import FORMATS
from tests.benchmarks.runs import run_module


def test_a_tiny_run_reports_every_format_it_can_reach() -> None:
    command = ["benchmarks.formats", "--streams", "2", "--tokens", "20", "--rounds", "1"]
    result = run_module(*command)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")][2:]
    assert [row.split(" | ")[0][2:] for row in rows] == [
        fmt.name for fmt in FORMATS if fmt.store != "redis"
    ]
