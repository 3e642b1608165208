"""The DataParallel suites catch every deliberately broken implementation.

For each mutant in ``tests/mutants/dp.py`` the table below names the suite tests that
must fail against it. Each mutant runs in its own pytest process over those tests
(``--dp-impl tests.mutants.dp:<name> --devices cpu:4``) from the repository root, and
counts as caught only when pytest reports test failures (exit code 1) and at least one
of the named tests failed: a usage error, a collection error, errors in fixtures, or
tests that all skip do not count. The reference must pass the same tests, so that a
"catch" is a verdict on the mutant and not a broken test.
There is one test per mutant, so ``-n 2`` spreads them over workers; how the runs
are made is in ``runner.py``.
"""

import pytest

import tests.mutants.dp as mutants_module
from tests.mutation.runner import (
    all_node_ids,
    assert_caught,
    assert_collects,
    assert_passes,
    assert_table_complete,
)

DEVICES = "cpu:4"

SPLIT = "suites/dp/test_split.py"
GATHER = "suites/dp/test_gather.py"
ODD = "suites/dp/test_odd_batches.py"
SYNC = "suites/dp/test_sync.py"
RNN = "suites/dp/test_rnn.py"

# mutant name -> suite node ids; at least one of them must fail against the mutant.
MUTANTS: dict[str, list[str]] = {
    # scatter
    "drop_remainder": [
        f"{SPLIT}::test_documented_chunkings[batch=10-replicas=3]",
        f"{ODD}::test_odd_batch_gives_the_single_device_outputs_and_gradients[batch=13-mlp]",
    ],
    "tensor_split_chunks": [
        f"{SPLIT}::test_documented_chunkings[batch=10-replicas=3]",
        f"{SPLIT}::test_documented_chunkings[batch=3-replicas=4]",
    ],
    "kwargs_not_scattered": [
        f"{SPLIT}::test_keyword_arguments_are_split_like_positional_ones[batch=13-replicas=4]",
        f"{SYNC}::test_outputs_and_gradients_equal_single_device[float64-transformer]",
    ],
    "kwargs_padded_like_torch": [
        f"{SPLIT}::test_non_tensor_keyword_arguments_with_fewer_chunks_than_devices",
    ],
    "non_tensor_args_copied": [
        f"{SPLIT}::test_non_tensor_arguments_are_shared_with_every_replica[batch=13-replicas=4]",
        f"{SPLIT}::test_non_tensor_keyword_arguments_are_shared_with_every_replica[replicas=4]",
    ],
    "scatter_detaches_inputs": [
        f"{ODD}::test_odd_batch_gives_the_single_device_outputs_and_gradients[batch=13-mlp]",
    ],
    "dim_ignored": [
        f"{SPLIT}::test_inputs_are_split_along_dim[batch=11-dim=1-replicas=4]",
        f"{GATHER}::test_outputs_are_gathered_along_dim[dim=1-replicas=4]",
        f"{RNN}::test_time_major_rnn_split_on_dim1_matches_single_device[lstm]",
    ],
    # replicate
    "detached_replicas": [
        f"{SYNC}::test_every_replicas_gradient_reaches_the_parameters",
        f"{SYNC}::test_outputs_and_gradients_equal_single_device[float64-mlp]",
    ],
    "averaged_gradients": [
        f"{SYNC}::test_replica_gradients_are_summed_not_averaged",
        f"{SYNC}::test_outputs_and_gradients_equal_single_device[float64-mlp]",
    ],
    "stale_replicas": [
        f"{SYNC}::test_replicas_use_the_current_parameters_on_every_forward[optimizer_step]",
        f"{SYNC}::test_replicas_use_the_current_parameters_on_every_forward[load_state_dict]",
    ],
    "shared_buffers": [
        f"{SYNC}::test_batchnorm_running_stats_come_from_the_first_chunk_alone",
        f"{SYNC}::test_in_place_buffer_updates_survive_from_the_first_replica_only",
    ],
    "bn_stats_from_last_chunk": [
        f"{SYNC}::test_batchnorm_running_stats_come_from_the_first_chunk_alone",
        f"{SYNC}::test_in_place_buffer_updates_survive_from_the_first_replica_only",
    ],
    "buffers_all_copied": [
        f"{SYNC}::test_batchnorm_running_stats_come_from_the_first_chunk_alone",
        f"{SYNC}::test_in_place_buffer_updates_survive_from_the_first_replica_only",
    ],
    "module_as_first_replica": [
        f"{SYNC}::test_attribute_writes_in_forward_are_lost",
    ],
    # parallel_apply
    "swallowed_exceptions": [
        f"{SYNC}::test_replica_exception_reaches_the_caller_with_type_message_and_replica",
        f"{ODD}::test_batchnorm_chunk_of_one_in_training_raises_naming_the_replica",
    ],
    "grad_mode_not_carried": [
        f"{SYNC}::test_replicas_run_in_the_callers_grad_mode[no_grad]",
        f"{SYNC}::test_replicas_run_in_the_callers_grad_mode[inference_mode]",
    ],
    "autocast_not_carried": [
        f"{SYNC}::test_autocast_is_carried_into_replicas[default_dtype]",
    ],
    "autocast_dtype_not_carried": [
        f"{SYNC}::test_autocast_is_carried_into_replicas[other_dtype]",
    ],
    "inference_mode_not_carried": [
        f"{SYNC}::test_replicas_run_in_the_callers_inference_mode[inference_mode]",
    ],
    # gather
    "reversed_gather": [
        f"{SPLIT}::test_concatenating_outputs_in_replica_order_gives_the_batch[batch=13-replicas=4]",
        f"{GATHER}::test_output_matches_the_single_device_module[mlp-float64]",
    ],
    "nested_types_lost": [
        f"{GATHER}::test_nested_output_containers_keep_their_types[replicas=4]",
        f"{GATHER}::test_output_matches_the_single_device_module[nested_outputs-float64]",
    ],
    "output_device_ignored": [
        f"{GATHER}::test_output_lands_on_the_requested_output_device",
    ],
}


def test_every_mutant_is_in_the_table():
    assert_table_complete(MUTANTS, mutants_module)


def test_named_tests_exist(runner, tmp_path):
    assert_collects(runner, ["--devices", DEVICES], all_node_ids(MUTANTS), tmp_path)


def test_reference_passes_the_named_tests(runner, tmp_path):
    args = ["--dp-impl", "reference", "--devices", DEVICES]
    assert_passes(runner, args, all_node_ids(MUTANTS), tmp_path)


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_is_caught(mutant, runner, tmp_path):
    args = ["--dp-impl", f"{mutants_module.__name__}:{mutant}", "--devices", DEVICES]
    assert_caught(runner, mutant, args, MUTANTS[mutant], tmp_path)
