"""Memory sizes as people write them: ``24GiB``, ``512MiB``, ``80GB``."""

import re

# Binary units (KiB, MiB, ...) and decimal ones (KB, MB, ...), all counting bytes.
UNITS: dict[str, int] = {
    "b": 1,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)", re.IGNORECASE)

MIB = 2**20
GIB = 2**30


class SizeError(ValueError):
    """A size that cannot be read; the message is one line."""


def parse_size(text: str) -> int:
    """Bytes in ``text``: a positive number and a unit (``24GiB``, ``1.5 GB``, ``512MiB``).

    Units are case-insensitive: B, KiB, MiB, GiB, TiB (powers of 1024) and KB, MB, GB, TB
    (powers of 1000). A unit is required, so ``24`` is not silently read as 24 bytes.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None or match[2].lower() not in UNITS:
        raise SizeError(
            f"{text!r} is not a size; expected a number and a unit, e.g. 24GiB, 512MiB or 80GB"
        )
    size = int(float(match[1]) * UNITS[match[2].lower()])
    if size <= 0:
        raise SizeError(f"{text!r} is not a positive size")
    return size


def format_size(size: float) -> str:
    """``25769803776`` -> ``24 GiB``; MiB below one GiB; four significant digits."""
    if abs(size) >= GIB:
        return f"{size / GIB:.4g} GiB"
    return f"{size / MIB:.4g} MiB"
