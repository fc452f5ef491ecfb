"""The format benchmark keeps working: a tiny run checks every stream exact and reports every
format without Redis (the Redis row needs --redis-url). Not a timing test."""

from __future__ import annotations

from benchmarks.formats import FORMATS
from tests.benchmarks import run_benchmark, table_rows


def test_a_tiny_run_reports_every_format_it_can_reach() -> None:
    output = run_benchmark(
        "benchmarks.formats", "--streams", "2", "--tokens", "20", "--rounds", "1"
    )
    assert table_rows(output) == [fmt.name for fmt in FORMATS if fmt.store != "redis"]
