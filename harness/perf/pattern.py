"""A reproducible, nowhere-zero bit pattern for copies, and the check that it arrived.

Word i of the pattern for ``seed`` is a multiplicative hash of i and the seed, made odd so no
word is zero. It is computed with integer arithmetic, which is exact on every device, so the
receiver of a copy regenerates the expected words locally instead of trusting the link that
is being measured to bring them back.
"""

from dataclasses import dataclass

import torch

DTYPE = torch.int32
WORD_BYTES = 4
# Words handled per step, bounding the int64 temporaries (128 MiB) whatever the buffer size.
CHUNK_WORDS = 2**24
_MULTIPLIER = 2654435761  # Knuth's multiplicative hash constant, odd and below 2**32


def words(nbytes: int) -> int:
    if nbytes <= 0 or nbytes % WORD_BYTES:
        raise ValueError(f"a pattern buffer needs a positive multiple of {WORD_BYTES} bytes")
    return nbytes // WORD_BYTES


def _chunk(start: int, stop: int, seed: int, device: torch.device) -> torch.Tensor:
    index = torch.arange(start, stop, dtype=torch.int64, device=device)
    # index < 2**31, so index * multiplier < 2**63: no overflow before the reduction.
    index.mul_(_MULTIPLIER).add_(seed).remainder_(2**32).sub_(2**31)
    return index.to(DTYPE).bitwise_or_(1)


def fill_pattern(buffer: torch.Tensor, seed: int) -> torch.Tensor:
    """Fill a 1-D int32 ``buffer`` (any device, pinned host memory included) with the pattern."""
    _check(buffer)
    for start in range(0, buffer.numel(), CHUNK_WORDS):
        stop = min(start + CHUNK_WORDS, buffer.numel())
        buffer[start:stop] = _chunk(start, stop, seed, buffer.device)
    return buffer


def pattern(nbytes: int, seed: int, device: torch.device, *, pin: bool = False) -> torch.Tensor:
    """A new buffer of ``nbytes`` holding the pattern; ``pin`` for page-locked host memory."""
    buffer = torch.empty(words(nbytes), dtype=DTYPE, device=device, pin_memory=pin)
    return fill_pattern(buffer, seed)


@dataclass(frozen=True)
class Mismatch:
    """Words of a buffer that differ from the pattern: how many, and the first one's index."""

    count: int
    first: int
    total: int

    def describe(self) -> str:
        return (
            f"{self.count} of {self.total} 4-byte words differ from what was sent, "
            f"the first at byte offset {self.first * WORD_BYTES}"
        )


def find_mismatch(buffer: torch.Tensor, seed: int) -> Mismatch | None:
    """None when ``buffer`` holds exactly the pattern for ``seed``, else what differs."""
    _check(buffer)
    count, first = 0, -1
    for start in range(0, buffer.numel(), CHUNK_WORDS):
        stop = min(start + CHUNK_WORDS, buffer.numel())
        differs = buffer[start:stop] != _chunk(start, stop, seed, buffer.device)
        found = int(differs.sum())
        if found and first < 0:
            first = start + int(differs.nonzero()[0, 0])
        count += found
    return Mismatch(count, first, buffer.numel()) if count else None


def _check(buffer: torch.Tensor) -> None:
    if buffer.dtype != DTYPE or buffer.dim() != 1:
        raise ValueError(f"a pattern buffer is 1-D {DTYPE}, got {buffer.dim()}-D {buffer.dtype}")
