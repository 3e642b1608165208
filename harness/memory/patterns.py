"""A memory test: fill a buffer with bit patterns and read them back.

The buffer is a flat int64 tensor (one "word" is 8 bytes). Every pattern is a function of the
word's index, generated chunk by chunk on the buffer's device both when writing and when
checking, so checking needs no second copy of the buffer: only a chunk-sized temporary. The
patterns catch the classic faults: bits stuck at 0 or 1 (zeros, ones), coupling between
neighbouring bits (the two checkerboards), a bit that cannot change alone (walking ones and
zeros), address lines that alias two locations (address in address), and anything
data-dependent (seeded random words, the same on every run).
"""

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from harness.memory.device import DeviceMemory

WORD_BYTES = 8
MASK64 = 2**64 - 1

Words = Callable[[int, int, torch.device], torch.Tensor]


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 torch stores it."""
    value &= MASK64
    return value - 2**64 if value >= 2**63 else value


def _constant(value: int) -> Words:
    def words(start: int, count: int, device: torch.device) -> torch.Tensor:
        return torch.full((count,), _signed(value), dtype=torch.int64, device=device)

    return words


def _indices(start: int, count: int, device: torch.device) -> torch.Tensor:
    return torch.arange(start, start + count, dtype=torch.int64, device=device)


def _walking(bits: list[int]) -> Words:
    table = [_signed(b) for b in bits]

    def words(start: int, count: int, device: torch.device) -> torch.Tensor:
        return torch.tensor(table, dtype=torch.int64, device=device)[
            _indices(start, count, device) % 64
        ]

    return words


def _random(seed: int) -> Words:
    def words(start: int, count: int, device: torch.device) -> torch.Tensor:
        # Seeded by the chunk's first index: writing and checking use the same chunks, so they
        # draw the same words.
        generator = torch.Generator(device=device).manual_seed(seed + start)
        return torch.randint(
            -(2**63), 2**63 - 1, (count,), dtype=torch.int64, device=device, generator=generator
        )

    return words


@dataclass(frozen=True)
class Pattern:
    name: str
    words: Words  # (first word index, word count, device) -> int64 tensor of those words


PATTERNS: tuple[Pattern, ...] = (
    Pattern("zeros", _constant(0)),
    Pattern("ones", _constant(MASK64)),
    Pattern("checkerboard", _constant(0x5555_5555_5555_5555)),
    Pattern("inverse_checkerboard", _constant(0xAAAA_AAAA_AAAA_AAAA)),
    Pattern("walking_ones", _walking([1 << i for i in range(64)])),
    Pattern("walking_zeros", _walking([MASK64 ^ (1 << i) for i in range(64)])),
    Pattern("address_in_address", _indices),
    Pattern("random", _random(seed=20240611)),
)

# 64 MiB of words per chunk: few kernel launches, and a temporary small next to the buffer.
CHUNK_WORDS = 8 * 2**20


@dataclass(frozen=True)
class Mismatch:
    """What one pattern read back wrong."""

    pattern: str
    bad_words: int
    words: int
    first_offset: int  # byte offset of the first bad word in the buffer
    expected: int
    read: int

    def describe(self) -> str:
        return (
            f"pattern {self.pattern}: {self.bad_words} bad words of {self.words}, first at byte "
            f"offset {self.first_offset:#x} (expected {self.expected & MASK64:#018x}, read "
            f"{self.read & MASK64:#018x})"
        )


def _chunks(words: int, chunk: int) -> Iterable[tuple[int, int]]:
    for start in range(0, words, chunk):
        yield start, min(chunk, words - start)


def write_pattern(buffer: torch.Tensor, pattern: Pattern, chunk: int = CHUNK_WORDS) -> None:
    """Fill the flat int64 ``buffer`` with ``pattern``."""
    for start, count in _chunks(buffer.numel(), chunk):
        buffer[start : start + count].copy_(pattern.words(start, count, buffer.device))


def check_pattern(
    buffer: torch.Tensor, pattern: Pattern, chunk: int = CHUNK_WORDS
) -> Mismatch | None:
    """Compare ``buffer`` with ``pattern``; None when every word matches.

    Counts stay on the device until the end, so the whole check synchronises once (twice when
    something is wrong, to find the first bad word).
    """
    spans = list(_chunks(buffer.numel(), chunk))
    counts = [
        (buffer[start : start + count] != pattern.words(start, count, buffer.device)).sum()
        for start, count in spans
    ]
    per_chunk = torch.stack(counts).tolist() if counts else []
    if not any(per_chunk):
        return None
    start, count = next(span for span, bad in zip(spans, per_chunk) if bad)
    expected = pattern.words(start, count, buffer.device)
    where = int(torch.nonzero(buffer[start : start + count] != expected)[0, 0])
    return Mismatch(
        pattern.name,
        bad_words=sum(per_chunk),
        words=buffer.numel(),
        first_offset=(start + where) * WORD_BYTES,
        expected=int(expected[where]),
        read=int(buffer[start + where]),
    )


def run_patterns(
    buffer: torch.Tensor, patterns: Iterable[Pattern] = PATTERNS, chunk: int = CHUNK_WORDS
) -> list[Mismatch]:
    """Write and check every pattern in turn; the mismatches, one per failing pattern."""
    mismatches = []
    for pattern in patterns:
        write_pattern(buffer, pattern, chunk)
        mismatch = check_pattern(buffer, pattern, chunk)
        if mismatch is not None:
            mismatches.append(mismatch)
    return mismatches


@dataclass(frozen=True)
class PatternRun:
    bytes_tested: int
    patterns: int
    seconds: float
    mismatches: tuple[Mismatch, ...]


def run_memory_test(
    memory: DeviceMemory,
    device: torch.device,
    share: float,
    patterns: Sequence[Pattern] = PATTERNS,
    chunk: int = CHUNK_WORDS,
) -> PatternRun:
    """Fill ``share`` of the device's free memory with one buffer and run every pattern on it.

    The time covers writing and checking all patterns (each check ends in a synchronisation).
    """
    memory.release()
    free, _ = memory.free_and_total()
    words = int(free * share) // WORD_BYTES
    buffer = torch.empty(words, dtype=torch.int64, device=device)
    try:
        start = time.perf_counter()
        mismatches = run_patterns(buffer, patterns, chunk)
        seconds = time.perf_counter() - start
    finally:
        del buffer
        memory.release()
    return PatternRun(words * WORD_BYTES, len(patterns), seconds, tuple(mismatches))
