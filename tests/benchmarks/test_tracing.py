"""The tracing benchmark keeps working: a tiny run gets every span of the traced proxy to its
sink (it waits for them, or fails) and reports both rows. Not a timing test."""

from __future__ import annotations

from tests.benchmarks import run_benchmark, table_rows


def test_a_tiny_run_reports_tracing_off_and_on() -> None:
    output = run_benchmark("benchmarks.tracing", "--streams", "4", "--tokens", "5", "--rounds", "1")
    assert table_rows(output) == ["off", "on"]
