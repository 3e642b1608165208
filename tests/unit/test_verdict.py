"""harness.verdict: claims fold their variants, outcomes read as a model developer reads them."""

from harness.verdict import Verdicts, claim_name, outcome_of

GATHER = "suites/dp/test_models.py::test_outputs_can_be_gathered"
BATCH = "suites/memory/test_batch_fit.py::test_largest_batch_runs_a_training_step"


def test_a_claim_is_its_suite_and_test_function_without_variants():
    assert claim_name(f"{GATHER}[cpu-float64-mlp]") == "dp: outputs can be gathered"


def test_outcomes_drop_pytest_prefixes_and_keep_the_first_line():
    assert outcome_of("failed", "AssertionError: cannot gather\nmore") == (
        "failed",
        "cannot gather",
    )
    assert outcome_of("skipped", "Skipped: not applicable: no RNN") == ("not applicable", "no RNN")


def test_a_reason_every_rank_gave_loses_the_ranks_prefix():
    reason = "ranks 0, 1: not applicable: BatchNorm"
    assert outcome_of("skipped", reason) == ("not applicable", "BatchNorm")
    assert outcome_of("skipped", "rank 0: not applicable: x") == ("not applicable", "x")
    mixed = "rank 0: not applicable: x; rank 1: needs a GPU"
    assert outcome_of("skipped", mixed) == ("skipped", mixed)
    assert outcome_of("skipped", "ranks 0, 1: needs NCCL") == ("skipped", "ranks 0, 1: needs NCCL")
    assert outcome_of("skipped", "needs a CUDA GPU") == ("skipped", "needs a CUDA GPU")
    assert outcome_of("passed", "") == ("passed", "")


def test_any_failing_variant_fails_the_claim_and_not_applicable_needs_every_variant():
    verdicts = Verdicts({"m": []})
    verdicts.add(f"{GATHER}[a-m]", "passed", "", {}, "m")
    verdicts.add(f"{GATHER}[b-m]", "failed", "Failed: output is a Cache: use_cache=False", {}, "m")
    verdicts.add(f"{GATHER}[c-m]", "passed", "", {}, "m")
    tied = "suites/dp/test_models.py::test_tied_weights_stay_tied_in_every_replica"
    verdicts.add(f"{tied}[a-m]", "skipped", "not applicable: no tied weights", {}, "m")
    assert dict(verdicts.properties("m")) == {
        "verdict.m.dp: outputs can be gathered": "failed: output is a Cache: use_cache=False",
        "verdict.m.dp: tied weights stay tied in every replica": "not applicable: no tied weights",
        "verdict.m.largest_batch": "not measured: the memory suite did not run",
    }
    verdicts.add(f"{tied}[b-m]", "passed", "", {}, "m")
    assert dict(verdicts.properties("m"))[
        "verdict.m.dp: tied weights stay tied in every replica"
    ] == ("passed")


def test_reports_of_other_models_and_of_no_model_are_not_counted():
    verdicts = Verdicts({"m": []})
    verdicts.add(f"{GATHER}[x]", "failed", "boom", {}, "other")
    assert verdicts.lines("m") == [
        "m: no claim ran",
        "  largest per-GPU batch: not measured: the memory suite did not run",
    ]


def test_the_largest_batch_names_the_gpu_and_what_limited_it():
    verdicts = Verdicts({"m": ["dropout off"]})
    found = {"metric.largest_batch": "96 samples", "metric.largest_batch.gpu": "GPU-1"}
    verdicts.add(f"{BATCH}[cuda:0-m]", "passed", "", found, "m")
    capped = {**found, "metric.largest_batch.ceiling": "4096 samples"}
    verdicts.add(f"{BATCH}[cuda:1-m]", "passed", "", capped, "m")
    lines = verdicts.lines("m")
    assert lines[0] == "m: 1 passed"
    assert lines[-2] == (
        "  largest per-GPU batch: 96 samples on GPU-1 (limited by memory: the next larger batch "
        "ran out of the GPU's cap); 96 samples on GPU-1 (limited by the search's ceiling of "
        "4096 samples)"
    )
    assert lines[-1] == "  note: dropout off"


def test_a_skipped_search_says_why_the_batch_was_not_measured():
    verdicts = Verdicts({"m": []})
    verdicts.add(f"{BATCH}[no-gpu-m]", "skipped", "needs a CUDA GPU: no CUDA", {}, "m")
    assert dict(verdicts.properties("m"))["verdict.m.largest_batch"] == (
        "not measured: needs a CUDA GPU: no CUDA"
    )
