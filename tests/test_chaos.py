"""The chaos soak (benchmarks/chaos.py): its judging, and a short run as a smoke test.

The short run checks that the soak runs end to end and judges what it saw, not how fast
anything was: its figures come from `make chaos` (docs/operations.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.chaos import ChaosConfig, Faults, Report, soak
from benchmarks.chaos_clients import Kills
from benchmarks.chaos_judge import Outcome, Tally, judge

FULL = "héllo wörld, 🙂 all of it"


@pytest.mark.parametrize(
    ("outcome", "verdict"),
    [
        (Outcome("exact", FULL, FULL, "clean"), "exact"),
        (Outcome("exact", FULL, FULL[:5], "clean"), "wrong"),  # truncated, yet clean
        (Outcome("utf8", FULL, FULL.replace("ö", "\ufffd"), "clean"), "wrong"),
        (Outcome("exact", FULL, FULL[:5], "abort"), "failed"),
        (Outcome("exact", FULL, "other", "abort"), "wrong"),  # not a prefix
        (Outcome("exact", FULL, "", "json-error"), "failed"),
        (Outcome("failing", FULL, FULL, "clean", should_fail=True), "wrong"),
        (Outcome("resume", FULL, FULL[:3], "error-event"), "failed"),
        (Outcome("resume", FULL, FULL[:3], "cut"), "wrong"),  # no replica died: no excuse
        (Outcome("resume", FULL, FULL[:3], "cut", replica_killed=True), "failed"),
        (Outcome("exact", FULL, "", "http-error"), "wrong"),
        (Outcome("exact", FULL, "", "http-error", replica_killed=True), "failed"),
        (Outcome("exact", FULL, FULL[:3], "hang"), "wrong"),
        (Outcome("abandoned", FULL, FULL[:3], "abandoned"), "abandoned"),
    ],
)
def test_every_response_is_judged_exact_failed_or_wrong(outcome: Outcome, verdict: str) -> None:
    assert judge(outcome) == verdict


def test_a_wrong_response_is_counted_and_fails_the_soak() -> None:
    tally = Tally()
    tally.add(Outcome("exact", FULL, FULL, "clean"))
    tally.add(Outcome("exact", FULL, FULL[:4], "clean"))
    report = Report(tally, Faults(), leaked=0, tracebacks=0, samples=[], config=ChaosConfig())
    assert tally.verdicts["wrong"] == 1
    assert tally.wrong[0].text == FULL[:4]
    assert not report.ok
    assert "WRONG 1" in report.line()
    assert report.line().endswith("FAILED")


def test_a_leaked_slot_or_a_traceback_fails_the_soak() -> None:
    tally = Tally()
    tally.add(Outcome("exact", FULL, FULL, "clean"))
    for leaked, tracebacks in ((1, 0), (0, 1)):
        report = Report(tally, Faults(), leaked, tracebacks, [], ChaosConfig())
        assert not report.ok


def test_a_stream_open_across_a_kill_is_told_apart() -> None:
    kills = Kills()
    kills.note(10.0)
    kills.note_back(11.0)
    assert kills.during(9.0, 10.5)
    assert kills.during(10.5, 12.0)
    assert not kills.during(11.5, 12.0)


async def test_a_short_soak_runs_judges_and_settles(tmp_path: Path) -> None:
    config = ChaosConfig(duration=8, clients=4, kill_every=3, redis_every=4, slow_every=2.5, calm=3)
    report = await soak(config, tmp_path)
    assert report.tally.total > 10
    assert report.faults.kills.count >= 1
    assert report.faults.redis_restarts >= 1
    assert report.tally.verdicts["wrong"] == 0, report.tally.wrong
    assert report.leaked == 0
    assert report.tracebacks == 0
    assert report.line().endswith(": OK")
