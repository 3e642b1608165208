"""``--model`` end to end, as a model developer runs it: the two examples pass every claim of
``suites/dp`` and ``suites/ddp`` on CPU devices, Hugging Face models built from configs pass
the model claims, and broken models fail the claim their fault breaks, with the message that
names the fault and the remedy.

All runs start together once per module (each imports torch); the tests read their results.
"""

import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.pytest_run import (
    REPO,
    junit_outcomes,
    junit_suite_properties,
    run_pytest,
    undocumented_properties,
)

SUITES = [str(REPO / "suites" / "dp"), str(REPO / "suites" / "ddp")]
MODEL_CLAIMS = str(REPO / "suites" / "dp" / "test_models.py")

RUNS = {
    "cnn": [*SUITES, "--model", "examples.cnn:spec"],
    "tiny_decoder": [*SUITES, "--model", "examples.tiny_decoder:spec"],
    "hugging face": [
        *(
            MODEL_CLAIMS,
            "--model",
            "tests.models.hf:bert",
            "--model",
            "tests.models.hf:gpt2_no_cache",
        )
    ],
    "broken": [
        MODEL_CLAIMS,
        *("--model", "tests.models.broken:stateful"),
        *("--model", "tests.models.broken:dataclass_output"),
        *("--model", "tests.models.broken:random_forward"),
        *("--model", "tests.models.hf:gpt2"),
    ],
}

# test -> what its failure message must say
BROKEN = {
    "test_outputs_can_be_gathered[dataclass_output]": [
        "the model's outputs cannot be gathered from its replicas: output is a Prediction",
        "return tensors only",
    ],
    "test_outputs_can_be_gathered[hf_gpt2]": [
        "output['cache'] is a DynamicCache",
        "use_cache=False",
    ],
    "test_forward_keeps_no_state_in_python_attributes[stateful]": [
        "the forward writes the Python attributes calls, last_rows",
        "registered buffer",
    ],
    "test_training_forward_is_deterministic_with_dropout_off[random_forward]": [
        "outputs differ between two training-mode forwards",
        "functional dropout",
    ],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def runs(workdir: Path) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    commands = {
        name: [*args, "--devices", "cpu:2", "-rs", "--junitxml", str(workdir / f"{name}.xml")]
        for name, args in RUNS.items()
    }
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        yield {name: pool.submit(run_pytest, args, timeout=600) for name, args in commands.items()}


@pytest.mark.parametrize("name", ["cnn", "tiny_decoder", "hugging face"])
def test_the_model_passes_every_claim_that_applies(runs, workdir, name):
    done = runs[name].result()
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr
    result = junit_outcomes(workdir / f"{name}.xml")
    assert len(result) >= (6 if name == "hugging face" else 100), sorted(result)
    skipped = {test: message for test, (outcome, message) in result.items() if outcome != "passed"}
    assert all(message for message in skipped.values()), skipped  # every skip says why


def test_the_examples_run_their_own_models_not_the_zoo(workdir, runs):
    for run, model in (("cnn", "small_cnn"), ("tiny_decoder", "tiny_decoder")):
        runs[run].result()
        tests = junit_outcomes(workdir / f"{run}.xml")
        model_tests = [test for test in tests if test.startswith("test_outputs_can_be_gathered")]
        assert model_tests == [f"test_outputs_can_be_gathered[{model}]"], model_tests


def test_broken_models_fail_the_claim_their_fault_breaks(runs, workdir):
    done = runs["broken"].result()
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr
    result = junit_outcomes(workdir / "broken.xml")
    for test, phrases in BROKEN.items():
        outcome, message = result[test]
        assert outcome == "failure", (test, outcome, message)
        for phrase in phrases:
            assert phrase in message, (test, message)
    # each broken model fails only what its fault breaks
    failed = {test for test, (outcome, _) in result.items() if outcome == "failure"}
    for model in ("stateful", "dataclass_output", "random_forward"):
        own = {test for test in failed if test.endswith(f"[{model}]")}
        assert own == {test for test in BROKEN if test.endswith(f"[{model}]")}, own


def test_the_verdict_names_each_claim_per_model_in_the_summary_and_junit(runs, workdir):
    done = runs["broken"].result()
    summary = done.stdout.split(" model verdict ", 1)[1]
    assert "stateful: 1 failed, 2 passed, 2 not applicable" in summary, summary
    line = next(line for line in summary.splitlines() if "dp: forward keeps no state" in line)
    assert "  failed: the forward writes the Python attributes calls, last_rows" in line, line
    found = junit_suite_properties(workdir / "broken.xml")
    assert found["verdict.hf_gpt2.dp: outputs can be gathered"].startswith(
        "failed: the model's outputs cannot be gathered from its replicas: output['cache'] is a "
        "DynamicCache"
    )
    assert found["verdict.stateful.dp: tied weights stay tied in every replica"] == (
        "not applicable: stateful shares no parameter between modules"
    )
    assert found["verdict.random_forward.dp: outputs can be gathered"] == "passed"
    assert undocumented_properties(workdir / "broken.xml") == []
    cnn = junit_suite_properties(workdir / "cnn.xml")
    claims = {k: v for k, v in cnn.items() if k.startswith("verdict.small_cnn.")}
    assert len(claims) >= 20, claims
    assert not [v for v in claims.values() if v.startswith("failed")], claims
