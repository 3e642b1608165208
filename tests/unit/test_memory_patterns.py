"""The pattern memory test on CPU tensors: patterns are what they claim, and a corrupted word
is found with its pattern, count and first offset."""

import pytest
import torch

from harness.memory.fake import FakeMemory
from harness.memory.patterns import (
    MASK64,
    PATTERNS,
    WORD_BYTES,
    check_pattern,
    run_memory_test,
    run_patterns,
    write_pattern,
)

BY_NAME = {pattern.name: pattern for pattern in PATTERNS}
CPU = torch.device("cpu")


def unsigned(t: torch.Tensor) -> list[int]:
    return [v & MASK64 for v in t.tolist()]


def test_patterns_are_what_their_names_say():
    words = {name: unsigned(p.words(0, 130, CPU)) for name, p in BY_NAME.items()}
    assert set(words["zeros"]) == {0}
    assert set(words["ones"]) == {MASK64}
    assert set(words["checkerboard"]) == {0x5555_5555_5555_5555}
    assert set(words["inverse_checkerboard"]) == {0xAAAA_AAAA_AAAA_AAAA}
    assert words["walking_ones"][:65] == [1 << i for i in range(64)] + [1]
    assert words["walking_ones"][63] == 1 << 63
    assert words["walking_zeros"][5] == MASK64 ^ (1 << 5)
    assert words["address_in_address"] == list(range(130))
    assert len(set(words["random"])) == 130


def test_words_depend_only_on_the_index_range():
    for pattern in PATTERNS:
        whole = pattern.words(1000, 64, CPU)
        assert torch.equal(whole, pattern.words(1000, 64, CPU)), pattern.name


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_every_pattern_reads_back_from_good_memory(chunk):
    buffer = torch.empty(333, dtype=torch.int64)
    assert run_patterns(buffer, PATTERNS, chunk) == []


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
def test_a_flipped_bit_is_found_with_its_offset_and_count(pattern):
    buffer = torch.empty(1000, dtype=torch.int64)
    write_pattern(buffer, pattern, chunk=64)
    # A bit stuck at the other value in word 130, and a second bad word later.
    expected_130 = int(buffer[130])
    buffer[130] ^= 1 << 17
    buffer[901] ^= 1
    mismatch = check_pattern(buffer, pattern, chunk=64)
    assert mismatch is not None
    assert (mismatch.pattern, mismatch.bad_words, mismatch.words) == (pattern.name, 2, 1000)
    assert mismatch.first_offset == 130 * WORD_BYTES
    assert mismatch.expected == expected_130
    assert mismatch.read == expected_130 ^ (1 << 17)
    assert mismatch.describe().startswith(
        f"pattern {pattern.name}: 2 bad words of 1000, first at byte offset 0x410 (expected 0x"
    )


def test_aliased_addresses_fail_address_in_address():
    # Word 600 answers for word 88 (an address line stuck): whatever is written to one
    # appears in both. Constant patterns cannot see it; address in address does.
    buffer = torch.empty(1024, dtype=torch.int64)
    results = {}
    for pattern in PATTERNS:
        write_pattern(buffer, pattern)
        buffer[88] = buffer[600]
        results[pattern.name] = check_pattern(buffer, pattern)
    assert results["zeros"] is None
    assert results["ones"] is None
    assert results["address_in_address"].first_offset == 88 * WORD_BYTES


def test_run_memory_test_fills_the_share_of_free_memory():
    memory = FakeMemory(total=2**20, context=2**18)
    run = run_memory_test(memory, CPU, share=0.5)
    assert run.bytes_tested == (2**20 - 2**18) // 2
    assert run.patterns == len(PATTERNS)
    assert run.mismatches == ()
    assert run.seconds >= 0
    assert memory.releases == 2
