"""The memory figure keeps working: a tiny held-open run reports the proxy's memory per open
stream beside its target, every stream exact. Not a memory test: the figure is not asserted."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.memory import QUICK_HOLDING, TARGET_KB
from tests.benchmarks import run_benchmark


def test_a_tiny_run_reports_the_memory_per_open_stream_and_its_target(tmp_path: Path) -> None:
    output = run_benchmark("benchmarks", "--quick", "--only", "memory", "--output", str(tmp_path))
    report = json.loads((tmp_path / "memory.json").read_text())
    assert report["errors"] == 0, report["first_error"]
    assert report["streams"] == QUICK_HOLDING.streams
    assert report["idle_rss_kb"] > 0
    assert report["open_rss_kb"] > 0
    assert report["target_kb"] == TARGET_KB
    assert f"memory per open stream: {report['per_stream_kb']:.1f} KB" in output
