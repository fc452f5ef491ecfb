"""The benchmark keeps working: a tiny run, every field reported, no errors. Not a timing test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from benchmarks.bench import QUICK, Row
from tests.benchmarks import run_benchmark


def test_quick_bench_reports_every_field_and_no_errors(tmp_path: Path) -> None:
    output = run_benchmark("benchmarks", "--quick", "--output", str(tmp_path))
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["machine"]["cpus"] >= 1
    fields = {field.name for field in dataclasses.fields(Row)}
    assert [row["scenario"] for row in report["scenarios"]] == [s.name for s in QUICK]
    for row in report["scenarios"]:
        assert set(row) == fields
        assert row["errors"] == 0, row["first_error"]
        assert row["direct_tokens_per_s"] > 0
        assert row["proxy_tokens_per_s"] > 0
    assert "tok/s proxy" in output
