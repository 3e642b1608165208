"""Sizes (``--memory-limit``) and shares (``--memory-test-share``) as users write them."""

import pytest

from harness.memory.sizes import SizeError, format_size, parse_size
from harness.plugin.memory import parse_test_share


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("24GiB", 24 * 2**30),
        ("512MiB", 512 * 2**20),
        ("80GB", 80 * 10**9),
        ("1.5 GiB", 3 * 2**29),
        ("64kib", 64 * 1024),
        ("2TB", 2 * 10**12),
        ("4096B", 4096),
        (" 1GiB ", 2**30),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["24", "24GXB", "GiB", "-1GiB", "0GiB", "24 GiB extra", "", "1e3MB"]
)
def test_bad_sizes(text):
    with pytest.raises(SizeError) as err:
        parse_size(text)
    assert "\n" not in str(err.value)
    assert repr(text) in str(err.value)


def test_format_size():
    assert format_size(24 * 2**30) == "24 GiB"
    assert format_size(512 * 2**20) == "512 MiB"
    assert format_size(1.5 * 2**30) == "1.5 GiB"


@pytest.mark.parametrize(("text", "share"), [("0.9", 0.9), ("0.95", 0.95), ("1e-3", 0.001)])
def test_shares(text, share):
    assert parse_test_share(text) == share


@pytest.mark.parametrize("text", ["0", "0.96", "1", "-0.5", "nan", "inf", "half"])
def test_bad_shares(text):
    with pytest.raises(ValueError, match=r"--memory-test-share .*: must be a fraction above 0"):
        parse_test_share(text)
