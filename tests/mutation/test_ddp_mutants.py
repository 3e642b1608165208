"""The DDP suites catch every deliberately broken DistributedDataParallel.

For each mutant in ``tests/mutants/ddp.py`` the table below names the suite tests that
must fail against it. Each mutant runs in its own pytest process over those tests
(``--ddp-impl tests.mutants.ddp:<name> --devices cpu:4``: two-rank gloo pools on the
CPU) from the repository root, and counts as caught only when pytest reports test
failures (exit code 1) and at least one of the named tests failed: a usage error, a
collection error, errors in fixtures, or tests that all skip do not count. The reference
and torch's own DDP (``--ddp-impl torch``) must pass the same tests, so that a "catch" is
a verdict on the mutant and not a broken test.

A failing distributed test costs a rank-pool rebuild (about 4 s), so each mutant names
one or two tests, the most direct claim it breaks. There is one test per mutant, so
``-n 2`` spreads them over workers; how the runs are made is in ``runner.py``.
"""

import pytest

import tests.mutants.ddp as mutants_module
from tests.mutation.runner import (
    all_node_ids,
    assert_caught,
    assert_collects,
    assert_passes,
    assert_table_complete,
)

DEVICES = "cpu:4"

SYNC = "suites/ddp/test_sync.py"
NO_SYNC = "suites/ddp/test_no_sync.py"
UNUSED = "suites/ddp/test_unused_parameters.py"
JOIN = "suites/ddp/test_join.py"
LOOPS = "suites/ddp/test_training_loops.py"

GRADIENTS = f"{SYNC}::test_averaged_gradients_equal_single_process_full_batch_gradients"
IDENTICAL = f"{SYNC}::test_parameters_stay_identical_across_ranks_during_training"

# mutant name -> suite node ids; at least one of them must fail against the mutant.
MUTANTS: dict[str, list[str]] = {
    # gradient averaging
    "summed_gradients": [f"{GRADIENTS}[float64-mlp]"],
    "divided_twice": [f"{GRADIENTS}[float64-mlp]"],
    "one_bucket_never_reduced": [f"{GRADIENTS}[float64-mlp]"],
    "only_rank0_reduces": [f"{IDENTICAL}[mlp]"],
    # module state
    "no_initial_broadcast": [
        f"{SYNC}::test_wrapping_gives_every_rank_rank0s_parameters_and_buffers"
    ],
    "no_buffer_broadcast": [
        f"{SYNC}::test_rank0_buffers_are_broadcast_at_the_start_of_every_forward"
    ],
    "buffers_from_last_rank": [
        f"{SYNC}::test_rank0_buffers_are_broadcast_at_the_start_of_every_forward"
    ],
    "broadcast_buffers_ignored": [f"{SYNC}::test_buffers_stay_local_with_broadcast_buffers_false"],
    # no_sync, unused parameters, join
    "no_sync_ignored": [
        f"{NO_SYNC}::test_no_sync_accumulates_each_ranks_own_gradients_without_communication"
    ],
    "unused_parameters_accepted": [
        f"{UNUSED}::test_unused_parameter_without_find_unused_parameters_fails_by_the_second_iteration"
    ],
    "join_divides_by_active_ranks": [
        f"{JOIN}::test_joined_ranks_contribute_zero_gradients_over_the_initial_world_size"
    ],
    # training loops
    "inf_sanitised_before_all_reduce": [
        f"{LOOPS}::test_inf_gradient_on_one_rank_makes_every_rank_skip_the_step[mlp]"
    ],
    "no_sync_never_resyncs": [
        f"{LOOPS}::test_accumulation_with_no_sync_gives_one_step_on_a_batch_n_times_larger[mlp]"
    ],
    "state_dict_without_prefix": [
        f"{LOOPS}::test_ddp_state_dict_keys_carry_the_module_prefix[mlp]"
    ],
}


def test_every_mutant_is_in_the_table():
    assert_table_complete(MUTANTS, mutants_module)


def test_named_tests_exist(runner, tmp_path):
    assert_collects(runner, ["--devices", DEVICES], all_node_ids(MUTANTS), tmp_path)


@pytest.mark.parametrize("impl", ["reference", "torch"])
def test_correct_implementations_pass_the_named_tests(impl, runner, tmp_path):
    args = ["--ddp-impl", impl, "--devices", DEVICES]
    assert_passes(runner, args, all_node_ids(MUTANTS), tmp_path)


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_is_caught(mutant, runner, tmp_path):
    args = ["--ddp-impl", f"{mutants_module.__name__}:{mutant}", "--devices", DEVICES]
    assert_caught(runner, mutant, args, MUTANTS[mutant], tmp_path)
