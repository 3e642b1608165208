"""``--memory-limit``, ``--memory-test-share`` and ``--model`` end to end, and the memory
suites on CPU devices: bad values are one usage error, every CUDA-only claim skips naming why,
``--model`` replaces the zoo of the largest-batch search (``--memory-model``, its old name, too,
with a deprecation warning), and under ``--acceptance`` a profile requiring the memory checks
fails their skips.

All runs start together once per module (each imports torch); the tests read their results.
"""

import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.pytest_run import (
    REPO,
    assert_one_usage_error,
    junit_outcomes,
    junit_suite_properties,
    run_pytest,
)

MEMORY_CHECKS = ["memory.usable", "memory.pattern", "memory.oom_boundary"]

PROFILE = f"""
name = "needs-memory"
description = "a CPU profile that requires the memory checks"

[inventory]
gpu_count = 0

[required]
checks = {MEMORY_CHECKS!r}
"""

SUITE = str(REPO / "suites" / "memory")

USER_MODEL = "tests.unit.test_model_option:my_model"

RUNS = {
    "cpu": [
        *(SUITE, "--devices", "cpu:4", "--memory-limit", "24GiB", "--memory-test-share", "0.5"),
        *("--model", USER_MODEL),
    ],
    "old option name": [SUITE, "--devices", "cpu:2", "--memory-model", USER_MODEL],
    "acceptance": [SUITE, "--devices", "cpu:2", "--profile", "PROFILE", "--acceptance"],
}

# One run per option; every form of each is covered by tests/unit/test_memory_sizes.py.
BAD_RUNS = {
    "not a model": (["--model", "resnet"], "--model 'resnet': expected MODULE:ATTR"),
    "limit without unit": (["--memory-limit", "24"], "--memory-limit '24' is not a size"),
    "share too large": (
        ["--memory-test-share", "1.5"],
        "--memory-test-share '1.5': must be a fraction above 0 and at most 0.95",
    ),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("memory")
    (workdir / "needs-memory.toml").write_text(PROFILE)
    return workdir


@pytest.fixture(scope="module")
def runs(workdir: Path) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    commands = {}
    for name, args in RUNS.items():
        args = [str(workdir / "needs-memory.toml") if a == "PROFILE" else a for a in args]
        commands[name] = [*args, "-rs", "--junitxml", str(workdir / f"{name}.xml")]
    for name, (args, _) in BAD_RUNS.items():
        commands[name] = [SUITE, "--devices", "cpu:2", *args]
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        yield {name: pool.submit(run_pytest, args) for name, args in commands.items()}


@pytest.mark.parametrize("name", BAD_RUNS)
def test_bad_value_is_one_usage_error(runs, name):
    done = runs[name].result()
    _, message = BAD_RUNS[name]
    assert_one_usage_error(done, message)


def test_on_cpu_every_memory_claim_skips_naming_why(runs, workdir):
    done = runs["cpu"].result()
    assert done.returncode == 0, done.stdout + done.stderr
    result = junit_outcomes(workdir / "cpu.xml")
    assert len(result) >= 6
    for test, (outcome, message) in result.items():
        assert outcome == "skipped", test
        assert message.startswith("needs a CUDA GPU: torch.cuda's memory accounting"), test
        assert message.endswith("--devices is cpu:4"), test
    assert junit_suite_properties(workdir / "cpu.xml")["memory_limit"] == "24 GiB"
    # --model replaces the realistic zoo in the largest-batch search, and the zoo elsewhere.
    searches = [test for test in result if test.startswith("test_largest_batch")]
    assert searches == ["test_largest_batch_runs_a_training_step[no-gpu-my_model]"], searches
    growth = [test for test in result if test.startswith("test_no_memory_growth")]
    assert growth == [
        "test_no_memory_growth_across_iterations[module-my_model]",
        "test_no_memory_growth_across_iterations[data_parallel-my_model]",
    ], growth


def test_the_old_option_name_still_works_with_a_warning(runs, workdir):
    done = runs["old option name"].result()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PytestDeprecationWarning: --memory-model is now --model" in done.stdout
    assert "test_largest_batch_runs_a_training_step[no-gpu-my_model] SKIPPED" not in done.stdout
    result = junit_outcomes(workdir / "old option name.xml")
    assert "test_largest_batch_runs_a_training_step[no-gpu-my_model]" in result


def test_acceptance_fails_the_skips_of_required_memory_checks(runs, workdir):
    done = runs["acceptance"].result()
    assert done.returncode == 1, done.stdout + done.stderr
    result = junit_outcomes(workdir / "acceptance.xml")
    failed = {test: message for test, (outcome, message) in result.items() if outcome == "failure"}
    assert sorted(failed) == [
        "test_allocation_beyond_the_cap_is_a_clean_oom[no-gpu]",
        "test_memory_holds_every_pattern[no-gpu]",
        "test_usable_memory_meets_the_profile[no-gpu]",
    ]
    for check, test in zip(MEMORY_CHECKS, sorted(failed)[::-1]):
        assert failed[test].startswith(
            f"Failed: required check {check} did not run under --acceptance (profile "
            "needs-memory): "
            "needs a CUDA GPU"
        ), failed[test]
    # The claims no profile requires stay skips.
    assert all(outcome in ("failure", "skipped") for outcome, _ in result.values())
