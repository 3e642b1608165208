"""A model developer's verdict: for each ``--model`` model, each claim the suites state about
it, passed, failed (with the failure's first line, which carries the remedy), not applicable
(with why), or skipped (with why); and the largest per-GPU batch the memory search found.

A claim is one test function; its variants (devices, dtypes, implementations, batch sizes)
fold into one line: any failure fails the claim, it is not applicable only where no variant
applied. Plain data in, plain data out: the pytest plugin (``harness.plugin.verdict``) feeds
it test reports and writes its lines and properties.
"""

import re
from dataclasses import dataclass, field

NOT_APPLICABLE = "not applicable: "
LARGEST_BATCH_FIGURE = "metric.largest_batch"
CEILING_FIGURE = "metric.largest_batch.ceiling"
NOT_MEASURED = "not measured"
RANK = {"failed": 3, "passed": 2, "skipped": 1, "not applicable": 0}


@dataclass
class Claim:
    outcome: str = "not applicable"
    reason: str = ""
    variants: int = 0

    def add(self, outcome: str, reason: str) -> None:
        self.variants += 1
        if self.variants == 1 or RANK[outcome] > RANK[self.outcome]:
            self.outcome, self.reason = outcome, reason

    def line(self) -> str:
        return self.outcome + (f": {self.reason}" if self.reason else "")


@dataclass
class ModelVerdict:
    claims: dict[str, Claim] = field(default_factory=dict)
    batches: list[tuple[str, str]] = field(default_factory=list)  # (batch, what limited it)
    batch_unmeasured: str = ""
    notes: list[str] = field(default_factory=list)

    def record(self, claim: str, outcome: str, reason: str) -> None:
        self.claims.setdefault(claim, Claim()).add(outcome, reason)

    def largest_batch(self) -> str:
        if self.batches:
            return "; ".join(f"{batch} ({limit})" for batch, limit in self.batches)
        return f"{NOT_MEASURED}: {self.batch_unmeasured or 'the memory suite did not run'}"

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(RANK, 0)
        for claim in self.claims.values():
            counts[claim.outcome] += 1
        return counts


def claim_name(nodeid: str) -> str:
    """``suites/dp/test_models.py::test_outputs_can_be_gathered[cpu-mlp]`` ->
    ``dp: outputs can be gathered``."""
    path, _, function = nodeid.partition("::")
    suite = path.rsplit("/", 2)[-2] if path.count("/") else path
    words = function.split("[", 1)[0].removeprefix("test_").replace("_", " ")
    return f"{suite}: {words}"


_RANKS_PREFIX = re.compile(r"^ranks? \d+(, \d+)*: ")


def _one_group(reason: str) -> bool:
    """Whether every rank gave the same reason (the rank pool joins different ones with ';')."""
    return bool(_RANKS_PREFIX.match(reason)) and not re.search(r"; ranks? \d", reason)


def outcome_of(outcome: str, message: str) -> tuple[str, str]:
    """A test report's outcome and message as a claim's (outcome, reason)."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    if outcome == "skipped":
        first = first.removeprefix("Skipped: ")
        # A distributed test's reason is prefixed by the ranks that gave it: ranks 0, 1: ...
        bare = _RANKS_PREFIX.sub("", first, count=1) if _one_group(first) else first
        if bare.startswith(NOT_APPLICABLE):
            return "not applicable", bare.removeprefix(NOT_APPLICABLE)
        return "skipped", first
    if outcome == "failed":
        for prefix in ("Failed: ", "AssertionError: "):
            first = first.removeprefix(prefix)
        return "failed", first
    return "passed", ""


def batch_limit(user_properties: dict[str, str]) -> str:
    if CEILING_FIGURE in user_properties:
        return f"limited by the search's ceiling of {user_properties[CEILING_FIGURE]}"
    return "limited by memory: the next larger batch ran out of the GPU's cap"


class Verdicts:
    """Every ``--model`` model's verdict, fed one test report at a time."""

    def __init__(self, models: dict[str, list[str]]) -> None:
        """``models``: each model's name -> notes on how its claims were judged."""
        self.models = {name: ModelVerdict(notes=list(notes)) for name, notes in models.items()}

    def add(
        self,
        nodeid: str,
        outcome: str,
        message: str,
        user_properties: dict[str, str],
        model: str,
    ) -> None:
        verdict = self.models.get(model)
        if verdict is None:
            return
        claim, (result, reason) = claim_name(nodeid), outcome_of(outcome, message)
        verdict.record(claim, result, reason)
        if claim.endswith(": largest batch runs a training step"):
            if result == "passed" and LARGEST_BATCH_FIGURE in user_properties:
                gpu = user_properties.get(f"{LARGEST_BATCH_FIGURE}.gpu", "")
                batch = user_properties[LARGEST_BATCH_FIGURE] + (f" on {gpu}" if gpu else "")
                verdict.batches.append((batch, batch_limit(user_properties)))
            elif result != "passed":
                verdict.batch_unmeasured = reason or result

    def lines(self, model: str) -> list[str]:
        verdict = self.models[model]
        counts = ", ".join(f"{n} {outcome}" for outcome, n in verdict.counts().items() if n)
        out = [f"{model}: {counts or 'no claim ran'}"]
        width = max((len(claim) for claim in verdict.claims), default=0)
        for claim, result in sorted(verdict.claims.items(), key=lambda c: -RANK[c[1].outcome]):
            out.append(f"  {claim.ljust(width)}  {result.line()}")
        out.append(f"  largest per-GPU batch: {verdict.largest_batch()}")
        out.extend(f"  note: {note}" for note in verdict.notes)
        return out

    def properties(self, model: str) -> list[tuple[str, str]]:
        verdict = self.models[model]
        found = [(f"verdict.{model}.{claim}", c.line()) for claim, c in verdict.claims.items()]
        notes = [(f"verdict.{model}.note", "; ".join(verdict.notes))] if verdict.notes else []
        return [*found, (f"verdict.{model}.largest_batch", verdict.largest_batch()), *notes]
