"""The CPU figures keep working: a tiny run against the floor and the proxy, every stream of
both checked exact by the load generator, every figure reported. Not a timing test."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.cpu import FIGURES
from tests.benchmarks import run_benchmark, table_rows


def test_a_tiny_run_reports_every_figure_for_the_floor_and_the_proxy(tmp_path: Path) -> None:
    output = run_benchmark(
        "benchmarks", "--quick", "--only", "cpu", "--cpu-rounds", "1", "--output", str(tmp_path)
    )
    report = json.loads((tmp_path / "cpu.json").read_text())
    # Every stream whole and exact, through the floor as through the proxy.
    assert report["errors"] == {"floor": 0, "proxy": 0}, report["first_errors"]
    for server in ("floor", "proxy"):
        figures = report["figures_seconds"][server]
        assert sorted(figures) == sorted(FIGURES)
        assert all(len(rounds) == 1 for rounds in figures.values())
    assert table_rows(output) == list(FIGURES)


def test_the_relaying_floor_relays_every_stream_exact_beside_the_proxy(tmp_path: Path) -> None:
    output = run_benchmark(
        "benchmarks", "--quick", "--only", "cpu", "--cpu-rounds", "1", "--relay-floor",
        "--output", str(tmp_path),
    )  # fmt: skip
    report = json.loads((tmp_path / "cpu.json").read_text())
    assert report["errors"] == {"floor": 0, "proxy": 0, "relaying": 0}, report["first_errors"]
    assert "proxy/relaying" in report["medians"]["per request"]
    assert len(report["ttfb_p50_seconds"]["relaying"]) == 1
    assert "relaying" in output
