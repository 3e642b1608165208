"""Node profiles: the shipped ones load, every validation error is one line naming the file and
the key, and ``Reference.judge`` draws its boundaries where the module docstring says."""

import dataclasses
import math
from pathlib import Path

import pytest

from harness.checks import FIGURES, USABLE_MEMORY, Check
from harness.profiles import (
    USABLE_MEMORY_ALLOWANCE_MIB,
    Health,
    Inventory,
    ProfileError,
    Reference,
    load_profile,
    shipped_profiles,
    version_tuple,
)
from tests.pytest_run import REPO

SHIPPED = ["cpu-virtual", "h100-1x", "h100-sxm-8x", "h200-1x", "h200-sxm-8x"]

GOOD = """\
name = "test"
description = "a test profile"

[inventory]
gpu_count = 2
gpu_model = "H100 80GB HBM3"
min_memory_mib = 80000
min_driver = "550.54"
pcie_generation = 5
pcie_width = 16
nvlink_links = 18

[performance.d2d_copy_bandwidth]
value = 3000.0
unit = "GB/s"
lower_pct = 15
upper_pct = 10
warn_pct = 5

[performance.bf16_matmul_tflops]
value = 700
unit = "TFLOP/s"
lower_pct = 15
upper_pct = 10
required = false

[health]
max_temperature_c = 80

[required]
checks = ["health.ecc", "performance.d2d_copy_bandwidth"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_every_shipped_profile_loads() -> None:
    assert shipped_profiles() == SHIPPED
    for name in SHIPPED:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.source == f"harness/profiles/shipped/{name}.toml"
        assert profile.description
        for metric, ref in profile.performance.items():
            assert ref.unit == FIGURES[metric]


def test_the_checkouts_profiles_folder_is_the_packaged_one() -> None:
    assert (REPO / "profiles").resolve() == REPO / "harness" / "profiles" / "shipped"
    by_path = load_profile(REPO / "profiles" / "h200-1x.toml")
    shipped = load_profile("h200-1x")
    assert dataclasses.replace(by_path, source=shipped.source) == shipped


def test_usable_memory_is_judged_through_the_profile() -> None:
    reference = load_profile("h100-1x").reference(USABLE_MEMORY)
    assert reference is not None
    assert (reference.value, reference.unit, reference.upper_pct) == (80_000, "MiB", None)
    assert reference.low == pytest.approx(80_000 - USABLE_MEMORY_ALLOWANCE_MIB)
    assert reference.judge(80_000 - USABLE_MEMORY_ALLOWANCE_MIB).status == "pass"
    assert reference.judge(200_000).status == "pass"  # no upper limit
    short = reference.judge(70_000)
    assert short.status == "fail"
    assert short.text == (
        "70000 MiB: fail, below 78464 MiB (reference 80000 MiB, -1.92%/no upper limit)"
    )
    assert load_profile("cpu-virtual").reference(USABLE_MEMORY) is None
    assert load_profile("h100-1x").reference("p2p_bandwidth") is None


def test_shipped_profiles_describe_their_nodes() -> None:
    h100, h200 = load_profile("h100-sxm-8x"), load_profile("h200-sxm-8x")
    assert (h100.inventory.gpu_count, h200.inventory.gpu_count) == (8, 8)
    assert h100.inventory.model_matches("NVIDIA H100 80GB HBM3")
    assert not h100.inventory.model_matches("NVIDIA H100 PCIe")
    assert h200.inventory.model_matches("NVIDIA H200")
    assert not h200.inventory.model_matches("NVIDIA H200 NVL")
    assert load_profile("h200-1x").performance["d2d_copy_bandwidth"].value == 4200
    assert load_profile("h200-1x").performance["bf16_matmul_tflops"].value == 790
    assert load_profile("h200-1x").requires("performance.bf16_matmul_tflops")
    assert not load_profile("h200-1x").requires("health.nvlink")
    cpu = load_profile("cpu-virtual")
    assert cpu.inventory == Inventory(gpu_count=0)
    assert not cpu.performance
    assert not cpu.required_checks


def test_a_path_loads_and_required_checks_combine(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, GOOD))
    assert profile.name == "test"
    assert profile.inventory.nvlink_links == 18
    assert profile.performance["bf16_matmul_tflops"] == Reference(
        700.0, "TFLOP/s", 15, 10, None, False
    )
    assert profile.required_checks == {Check.HEALTH_ECC, Check.PERFORMANCE_D2D_COPY_BANDWIDTH}
    assert profile.health == Health(max_temperature_c=80, slowdown_margin_c=5)
    assert load_profile(str(write(tmp_path, GOOD))).name == "test"


def test_health_table_is_optional(tmp_path: Path) -> None:
    without = load_profile(write(tmp_path, GOOD.replace("[health]\nmax_temperature_c = 80\n", "")))
    assert without.health == Health(max_temperature_c=None, slowdown_margin_c=5)
    margin = GOOD.replace("max_temperature_c = 80", "slowdown_margin_c = 0")
    assert load_profile(write(tmp_path, margin)).health == Health(None, 0)


def implemented_checks(*modules: str) -> set[str]:
    """The required_check names the tests of these suite modules carry."""
    import importlib

    names = set()
    for module in modules:
        for test in vars(importlib.import_module(module)).values():
            for mark in getattr(test, "pytestmark", []):
                if mark.name == "required_check":
                    names.add(mark.args[0])
    return names


def test_gpu_profiles_require_the_hardware_checks_the_suites_implement() -> None:
    hardware = implemented_checks("suites.hardware.test_inventory", "suites.hardware.test_health")
    assert {"inventory.mig", "health.xid", "health.temperature"} <= hardware
    memory = {"memory.usable", "memory.pattern", "memory.oom_boundary"}
    nvlink = {"inventory.nvlink", "health.nvlink"}
    for name in ["h100-1x", "h100-sxm-8x", "h200-1x", "h200-sxm-8x"]:
        profile = load_profile(name)
        multi = profile.inventory.gpu_count > 1
        expected = (hardware if multi else hardware - nvlink) | memory
        if multi:
            expected |= {"compute.cross_gpu_agreement"}
        checks = {c for c in profile.required_checks if not c.startswith("performance.")}
        assert checks == expected, name


def test_driver_versions_compare_numerically() -> None:
    inventory = Inventory(gpu_count=1, min_driver="550.54")
    assert inventory.driver_ok("550.54")
    assert inventory.driver_ok("550.54.0")
    assert inventory.driver_ok("550.100.1")
    assert inventory.driver_ok("580.65.06")
    assert not inventory.driver_ok("550.9")
    assert not inventory.driver_ok("535.104.05")
    assert version_tuple("550.540") > version_tuple("550.54.15")
    with pytest.raises(ValueError):
        version_tuple("550.x")


# (replace this, with this) in GOOD -> the key the error must name and a piece of its message.
BAD = {
    "negative lower": (
        "lower_pct = 15\nupper_pct = 10\nwarn",
        "lower_pct = -5\nupper_pct = 10\nwarn",
        "performance.d2d_copy_bandwidth.lower_pct: must be >= 0, got -5",
    ),
    "negative upper": (
        "upper_pct = 10\nwarn",
        "upper_pct = -1\nwarn",
        "performance.d2d_copy_bandwidth.upper_pct: must be >= 0, got -1",
    ),
    "warn outside tolerance": (
        "warn_pct = 5",
        "warn_pct = 12",
        "performance.d2d_copy_bandwidth.warn_pct: must lie inside the tolerance",
    ),
    "negative warn": (
        "warn_pct = 5",
        "warn_pct = -1",
        "performance.d2d_copy_bandwidth.warn_pct: must be >= 0",
    ),
    "unknown top key": ('name = "test"', 'name = "test"\ncolour = "red"', "colour: unknown key"),
    "unknown inventory key": (
        "nvlink_links = 18",
        "nvlink_links = 18\nnvlinks = 3",
        "inventory.nvlinks: unknown key",
    ),
    "unknown metric key": (
        "warn_pct = 5",
        "warn_pct = 5\nwarn = 3",
        "performance.d2d_copy_bandwidth.warn: unknown key",
    ),
    "unknown metric": (
        "[performance.bf16_matmul_tflops]",
        "[performance.bf16_matmul]",
        "performance.bf16_matmul: unknown metric",
    ),
    "wrong unit": ('unit = "GB/s"', 'unit = "GiB/s"', "performance.d2d_copy_bandwidth.unit"),
    "missing name": ('name = "test"\n', "", "name: missing"),
    "missing inventory": (
        "[inventory]\ngpu_count = 2",
        "[inventoryx]\ngpu_count = 2",
        "inventoryx",
    ),
    "missing gpu field": ('gpu_model = "H100 80GB HBM3"\n', "", "inventory.gpu_model: missing"),
    "missing value": ("value = 3000.0\n", "", "performance.d2d_copy_bandwidth.value: missing"),
    "string count": ("gpu_count = 2", 'gpu_count = "2"', "inventory.gpu_count: must be an integer"),
    "float count": ("gpu_count = 2", "gpu_count = 2.0", "inventory.gpu_count: must be an integer"),
    "bool count": ("gpu_count = 2", "gpu_count = true", "inventory.gpu_count: must be an integer"),
    "negative count": ("gpu_count = 2", "gpu_count = -1", "inventory.gpu_count: must be >= 0"),
    "string value": (
        "value = 3000.0",
        'value = "3000"',
        "performance.d2d_copy_bandwidth.value: must be a number",
    ),
    "zero value": (
        "value = 3000.0",
        "value = 0",
        "performance.d2d_copy_bandwidth.value: must be > 0",
    ),
    "nan value": (
        "value = 3000.0",
        "value = nan",
        "performance.d2d_copy_bandwidth.value: must be finite",
    ),
    "string required": (
        "required = false",
        'required = "no"',
        "performance.bf16_matmul_tflops.required: must be a bool",
    ),
    "bad driver": ('min_driver = "550.54"', 'min_driver = "r550"', "inventory.min_driver"),
    "bad regex": ('gpu_model = "H100 80GB HBM3"', 'gpu_model = "H100("', "inventory.gpu_model"),
    "zero memory": ("min_memory_mib = 80000", "min_memory_mib = 0", "inventory.min_memory_mib"),
    "metric not a table": (
        '[performance.bf16_matmul_tflops]\nvalue = 700\nunit = "TFLOP/s"\nlower_pct = 15\n'
        "upper_pct = 10\nrequired = false",
        "[performance]\nbf16_matmul_tflops = 700",
        "performance.bf16_matmul_tflops: must be a table",
    ),
    "checks not a list": (
        'checks = ["health.ecc", "performance.d2d_copy_bandwidth"]',
        'checks = "health.ecc"',
        "required.checks: must be a list",
    ),
    "empty check": (
        'checks = ["health.ecc", "performance.d2d_copy_bandwidth"]',
        'checks = ["health.ecc", ""]',
        "required.checks[1]",
    ),
    "required absent metric": (
        'checks = ["health.ecc", "performance.d2d_copy_bandwidth"]',
        'checks = ["performance.p2p_bandwidth"]',
        "required.checks[0]",
    ),
    "required optional metric": (
        'checks = ["health.ecc", "performance.d2d_copy_bandwidth"]',
        'checks = ["performance.bf16_matmul_tflops"]',
        "required.checks[0]: 'performance.bf16_matmul_tflops' is listed but",
    ),
    "not toml": ('name = "test"', "name = ", "not valid TOML"),
    "unknown check": (
        'checks = ["health.ecc", "performance.d2d_copy_bandwidth"]',
        'checks = ["health.ecc", "healt.xid"]',
        "required.checks[1]: unknown check 'healt.xid' (did you mean 'health.xid'?)",
    ),
    "unknown health key": (
        "max_temperature_c = 80",
        "max_temp_c = 80",
        "health.max_temp_c: unknown key (allowed: max_temperature_c, slowdown_margin_c)",
    ),
    "zero temperature": (
        "max_temperature_c = 80",
        "max_temperature_c = 0",
        "health.max_temperature_c: must be >= 1, got 0",
    ),
    "float temperature": (
        "max_temperature_c = 80",
        "max_temperature_c = 80.5",
        "health.max_temperature_c: must be an integer, got float 80.5",
    ),
    "negative margin": (
        "max_temperature_c = 80",
        "slowdown_margin_c = -2",
        "health.slowdown_margin_c: must be >= 0, got -2",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_every_error_is_one_line_naming_file_and_key(tmp_path: Path, case: str) -> None:
    old, new, expected = BAD[case]
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_error_names_the_file_as_given_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "h100.toml").write_text(
        GOOD.replace("lower_pct = 15\nupper_pct = 10\nwarn", "lower_pct = -5\nupper_pct = 10\nwarn")
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProfileError) as info:
        load_profile("profiles/h100.toml")
    assert str(info.value) == (
        "profiles/h100.toml: performance.d2d_copy_bandwidth.lower_pct: must be >= 0, got -5"
    )


def test_gpu_fields_are_optional_without_gpus(tmp_path: Path) -> None:
    profile = load_profile(
        write(tmp_path, 'name = "c"\ndescription = "d"\n[inventory]\ngpu_count = 0\n')
    )
    assert profile.inventory == Inventory(gpu_count=0)


def test_unknown_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(
        ProfileError, match=r"^--profile h300: no such profile \(shipped: cpu-virtual"
    ):
        load_profile("h300")
    with pytest.raises(ProfileError, match="no such file"):
        load_profile(tmp_path / "absent.toml")


# judge(): value 100, 15% below, 10% above, warn beyond 5%.
REF = Reference(100.0, "GB/s", lower_pct=15, upper_pct=10, warn_pct=5)


@pytest.mark.parametrize(
    ("measured", "status"),
    [
        (100.0, "pass"),
        (95.0, "pass"),  # the warn band's edges are inside it
        (105.0, "pass"),
        (94.99, "warn"),
        (105.01, "warn"),
        (85.0, "warn"),  # the tolerance's edges pass (with a warning)
        (110.0, "warn"),
        (84.99, "fail"),
        (110.01, "fail"),
        (0.0, "fail"),
        (math.nan, "fail"),
        (math.inf, "fail"),
    ],
)
def test_judge_boundaries(measured: float, status: str) -> None:
    verdict = REF.judge(measured)
    assert verdict.status == status
    assert (verdict.low, verdict.high) == (85.0, 110.0)


def test_judge_without_warn_band() -> None:
    ref = Reference(200.0, "TFLOP/s", lower_pct=10, upper_pct=0)
    assert ref.judge(180.0).status == "pass"
    assert ref.judge(200.0).status == "pass"
    assert ref.judge(179.9).status == "fail"
    assert ref.judge(200.1).status == "fail"


def test_verdict_text_and_junit_properties() -> None:
    fail = REF.judge(80.0)
    assert (
        fail.text == "80 GB/s: fail, below 85 GB/s (reference 100 GB/s, -15%/+10% (warn beyond 5%))"
    )
    assert REF.judge(120.0).text.startswith("120 GB/s: fail, above 110 GB/s")
    assert "more than 5% from the reference" in REF.judge(90.0).text
    assert (
        REF.judge(100.0).text == "100 GB/s: pass (reference 100 GB/s, -15%/+10% (warn beyond 5%))"
    )
    assert fail.properties("d2d_copy_bandwidth") == [
        ("metric.d2d_copy_bandwidth", "80 GB/s"),
        ("metric.d2d_copy_bandwidth.reference", "100 GB/s"),
        ("metric.d2d_copy_bandwidth.tolerance", "-15%/+10% (warn beyond 5%)"),
        ("metric.d2d_copy_bandwidth.verdict", "fail"),
    ]
