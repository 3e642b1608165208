"""Per-rank results folded into one test outcome, with a message that says what each rank did.

- any rank failed, hung or died: the test fails; the message's first line names each of
  those ranks and what happened, then comes each one's traceback, stack (for a hang) or
  exit code or signal, and the tail of its output;
- else any rank xfailed: xfail; else any rank skipped: skip; reasons prefixed by the ranks;
- else the test passed.
"""

from collections import defaultdict
from dataclasses import dataclass

from harness.rankpool.protocol import DIED, FAILED, HUNG, PASSED, SKIPPED, XFAILED, RankResult

# Lines of a rank's output quoted in a failure message.
OUTPUT_TAIL_LINES = 40


@dataclass(frozen=True)
class Verdict:
    outcome: str  # passed | failed | skipped | xfailed
    message: str = ""


def judge(results: list[RankResult]) -> Verdict:
    bad = [r for r in results if r.outcome in (FAILED, HUNG, DIED)]
    if bad:
        return Verdict(FAILED, failure_message(results))
    for outcome in (XFAILED, SKIPPED):
        chosen = [r for r in results if r.outcome == outcome]
        if chosen:
            return Verdict(outcome, _reasons(chosen))
    return Verdict(PASSED)


def failure_message(results: list[RankResult]) -> str:
    world = len(results)
    bad = [r for r in results if r.outcome in (FAILED, HUNG, DIED)]
    headline = "; ".join(_grouped(bad, _what))
    lines = [f"{world}-rank test: {headline}"]
    others = [r for r in results if r not in bad]
    if others:
        lines.append("; ".join(_grouped(others, lambda r: r.outcome)))
    for r in bad:
        lines.append("")
        lines.append(f"==== rank {r.rank} (pid {r.pid}): {_what(r)} ====")
        if r.outcome == FAILED and r.traceback:
            lines.append(r.traceback.rstrip())
        elif r.outcome == HUNG:
            lines.append("its stack, most recent call first:")
            lines.append(r.stack.rstrip())
        tail = _tail(r.output)
        if tail:
            lines.append(f"---- rank {r.rank} output (last {OUTPUT_TAIL_LINES} lines) ----")
            lines.append(tail)
    return "\n".join(lines)


def _what(r: RankResult) -> str:
    if r.outcome == FAILED:
        return f"failed: {r.message}" if r.message else "failed"
    if r.outcome == DIED:
        return f"died: {r.message}"
    return r.message or r.outcome  # hung: "did not finish within 3 s"


def _grouped(results: list[RankResult], describe) -> list[str]:
    """``rank 1 failed: ...`` / ``ranks 0, 2 did not finish within 3 s``, same texts merged."""
    groups: dict[str, list[int]] = defaultdict(list)
    for r in results:
        groups[describe(r)].append(r.rank)
    return [f"{_ranks(ranks)} {text}" for text, ranks in groups.items()]


def _reasons(results: list[RankResult]) -> str:
    groups: dict[str, list[int]] = defaultdict(list)
    for r in results:
        groups[r.message].append(r.rank)
    return "; ".join(f"{_ranks(ranks)}: {reason}" for reason, ranks in groups.items())


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


def _tail(output: str) -> str:
    return "\n".join(output.rstrip().splitlines()[-OUTPUT_TAIL_LINES:])
