"""The timeline of one request keeps working: a tiny run prints every step from the request's
bytes to its first text byte, the task steps, the time to first byte beside the relaying floor,
and issue 32's targets. Not a timing test."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.timeline import STEPS
from tests.benchmarks import run_benchmark, table_rows


def test_a_tiny_run_stamps_every_step_of_the_start_of_a_stream(tmp_path: Path) -> None:
    output = run_benchmark("benchmarks.timeline", "--quick", "--output", str(tmp_path))
    report = json.loads((tmp_path / "timeline.json").read_text())
    # "connected" only if some request found no kept-alive upstream connection.
    expected = [step for step, _ in STEPS[1:] if step != "connected"]
    assert [step for step, _ in report["rows_us"] if step != "connected"] == expected
    assert [row for row in table_rows(output)[:-1] if row != "connected"] == expected
    assert report["requests"] == 10
    assert report["total_us"] > 0
    assert sorted(report["ttfb_p50_ms"]) == ["direct", "proxy", "relaying", "stamped"]
    assert report["task_steps"]
    assert "task steps before the first text byte" in output


def test_make_bench_prints_the_timeline_and_the_targets(tmp_path: Path) -> None:
    output = run_benchmark("benchmarks", "--quick", "--only", "timeline", "--output", str(tmp_path))
    assert "request read to first text written" in output
    assert "TTFB at one stream ≤ relaying floor + 0.5 ms" in output
