"""One property vocabulary: ``harness.properties.TABLE`` is what the docs list, and every
property a real run writes is in it."""

import re

import pytest

from harness import properties
from harness.properties import TABLE
from tests.pytest_run import REPO

DOCS = REPO / "docs" / "ci-and-reports.md"
START = (
    "<!-- property table: held against harness/properties.py by tests/unit/test_properties.py -->"
)
END = "<!-- end of property table -->"
ROW = re.compile(r"\|\s*`([^`]+)`\s*\|\s*(suite|test)\s*\|\s*(.+?)\s*\|")


def documented() -> list[tuple[str, str]]:
    text = DOCS.read_text(encoding="utf-8")
    assert text.count(START) == 1, f"{DOCS}: the table's opening marker"
    assert text.count(END) == 1, f"{DOCS}: the table's closing marker"
    table = text.split(START, 1)[1].split(END, 1)[0]
    rows = [ROW.match(line) for line in table.strip().splitlines()[2:]]
    assert all(rows), table
    return [(row[1], row[2]) for row in rows if row]


def test_the_documented_table_is_the_modules():
    assert documented() == [(entry.name, entry.level) for entry in TABLE]


def pattern(name: str) -> re.Pattern[str]:
    """``metric.<name>.gpu`` -> a regex: each ``<placeholder>`` stands for one or more
    characters (names may contain dots)."""
    parts = re.split(r"<[^>]+>", name)
    return re.compile(".+".join(re.escape(part) for part in parts))


def documents(name: str, level: str) -> bool:
    return any(entry.level == level and pattern(entry.name).fullmatch(name) for entry in TABLE)


@pytest.mark.parametrize(
    ("name", "level", "known"),
    [
        ("node.gpu.7.cuda_index", "suite", True),
        ("metric.gpu3.temperature_c.gpu", "test", True),
        ("env.CUBLAS_WORKSPACE_CONFIG", "suite", True),
        ("gpu", "test", True),
        ("gpu", "suite", False),
        ("nodes.gpu.1.name", "suite", False),
        ("metric", "test", False),
    ],
)
def test_patterns_match_what_they_stand_for(name, level, known):
    assert documents(name, level) == known


def test_the_name_builders_write_documented_names():
    built = [
        ("suite", properties.node_gpu(3, "cuda_index")),
        ("suite", properties.cuda_gpu(0, "nvml_index")),
        ("suite", properties.env("PYTORCH_CUDA_ALLOC_CONF")),
        ("test", properties.figure("d2d_copy_bandwidth", properties.FIGURE_GPU)),
        ("test", properties.figure(properties.gpu_figure(3, "xid_count"))),
        ("test", properties.gpu_fact(3, "clock_event_reasons")),
        ("test", properties.measurement_detail("p2p_bandwidth", "median_time")),
    ]
    assert [name for level, name in built if not documents(name, level)] == []
    with pytest.raises(ValueError, match="not a figure property"):
        properties.figure("x", "median")
    assert properties.split_figure("metric.gpu3.ecc_enabled.gpu") == ("gpu3.ecc_enabled", "gpu")
    assert properties.split_figure("metric.largest_batch.trials") == ("largest_batch.trials", None)
    assert properties.split_figure("devices") is None
