"""How the chaos soak judges one response: exact, explicitly failed, or WRONG.

A response is judged by what its client saw, against the text the fake upstream was asked
for (`reply_text` of its prompt):

- exact: a clean end with exactly the expected text (raw text: the terminating chunk;
  SSE: the `done` event last);
- failed: an explicit failure: a JSON error before the commit point, an abort (raw text
  ends without its terminating chunk), or an `error` event last (SSE); where a replica was
  killed while the request was open, also nginx's own error page or an SSE stream cut
  (a killed process can say nothing). The text before it must be a prefix of the expected;
- abandoned: the client left on purpose (not judged);
- WRONG: everything else: a clean end with wrong or truncated text, a stream the upstream
  was told to fail that ended clean, text that is not a prefix of the expected, an SSE stream
  cut without its last event while no replica died, a hang (no byte for 30 s).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["exact", "failed", "abandoned", "wrong"]
Ending = Literal[
    "clean", "abort", "json-error", "http-error", "error-event", "cut", "hang", "abandoned"
]


@dataclass(slots=True, frozen=True)
class Outcome:
    """What one client saw of one response."""

    kind: str  # the mix's name for the request (exact, utf8, split, failing, ...)
    expected: str
    text: str
    ending: Ending
    should_fail: bool = False  # the upstream was told to fail after the commit point
    replica_killed: bool = False  # a replica was killed while the request was open


def judge(outcome: Outcome) -> Verdict:
    ending = outcome.ending
    if ending == "abandoned":
        return "abandoned"
    if ending == "json-error" or (ending == "http-error" and outcome.replica_killed):
        return "failed" if not outcome.text else "wrong"
    if not outcome.expected.startswith(outcome.text):
        return "wrong"  # corrupted or reordered text, whatever ended it
    if ending in ("abort", "error-event") or (ending == "cut" and outcome.replica_killed):
        return "failed"
    if ending != "clean":
        return "wrong"  # a hang, or a cut or an error page nothing explains
    if outcome.should_fail:
        return "wrong"  # the upstream failed, yet the stream ended as a success
    return "exact" if outcome.text == outcome.expected else "wrong"


@dataclass(slots=True)
class Tally:
    verdicts: Counter[str] = field(default_factory=Counter)
    endings: Counter[str] = field(default_factory=Counter)
    wrong: list[Outcome] = field(default_factory=list)  # the first few, for the report

    def add(self, outcome: Outcome) -> Verdict:
        verdict = judge(outcome)
        self.verdicts[verdict] += 1
        if verdict == "failed":
            self.endings[outcome.ending] += 1
        if verdict == "wrong" and len(self.wrong) < 5:
            self.wrong.append(outcome)
        return verdict

    @property
    def total(self) -> int:
        return sum(self.verdicts.values())

    def line(self) -> str:
        failed = ", ".join(f"{name} {count}" for name, count in sorted(self.endings.items()))
        counts = self.verdicts
        return (
            f"{self.total} responses: exact {counts['exact']}, failed {counts['failed']}"
            f" ({failed or 'none'}), abandoned {counts['abandoned']}, WRONG {counts['wrong']}"
        )
