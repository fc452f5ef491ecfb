"""The hedging figure keeps working: a tiny run with a slow replica reports TTFT with hedging
off and on, every answer checked exact by the bench itself. Not a timing test."""

from __future__ import annotations

from tests.benchmarks import run_benchmark


def test_a_tiny_run_reports_ttft_with_hedging_off_and_on() -> None:
    output = run_benchmark(
        "benchmarks.hedging", "--requests", "24", "--slow-start", "0.3", "--slow-every", "5"
    )
    assert "| hedging off |" in output
    assert "| hedging on (auto) |" in output
    off = next(line for line in output.splitlines() if line.startswith("| hedging off |"))
    assert off.rstrip().endswith("| 0 |")  # no hedge when it is off
