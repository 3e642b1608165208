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
MODELS = "suites/dp/test_models.py"
LOOPS = "suites/dp/test_training_loops.py"

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
    # what real models and training loops show
    "untied_replicas": [
        f"{MODELS}::test_tied_weights_stay_tied_in_every_replica[tiny_decoder]",
        f"{SYNC}::test_outputs_and_gradients_equal_single_device[float64-tiny_decoder]",
    ],
    "integer_inputs_cast": [
        f"{MODELS}::test_integer_inputs_reach_every_replica_as_integers[sparse_embedding]",
        f"{MODELS}::test_integer_inputs_reach_every_replica_as_integers[transformer]",
    ],
    "gradients_sanitised": [
        f"{LOOPS}::test_grad_scaler_skips_the_same_steps_at_the_same_scale_as_one_device[mlp]",
        f"{LOOPS}::test_without_a_scaler_one_replicas_inf_reaches_the_parameters[mlp]",
    ],
    "accumulation_overwrites": [
        f"{LOOPS}::test_accumulated_micro_batches_give_one_step_on_a_batch_n_times_larger[float64-mlp]",
        f"{LOOPS}::test_accumulating_without_dividing_the_loss_gives_n_times_the_gradients[float64-mlp]",
    ],
    "state_dict_without_prefix": [
        f"{LOOPS}::test_wrapped_state_dict_keys_carry_the_module_prefix[mlp]",
        f"{LOOPS}::test_wrapped_state_dict_does_not_load_into_a_plain_model[mlp]",
    ],
    "nondeterministic_reduction": [
        f"{LOOPS}::test_the_same_seed_trains_to_bitwise_the_same_parameters_twice[float64-mlp]",
        f"{LOOPS}::test_the_same_seed_trains_to_bitwise_the_same_parameters_twice[float32-mlp]",
    ],
}

# Mutants whose fault only a user's model shows (no zoo model ties weights): their runs
# add ``--model`` with this spec, and their node ids name that model.
WITH_MODEL = {"untied_replicas": "examples.tiny_decoder:spec"}


def _model_args(spec: str | None) -> list[str]:
    return ["--model", spec] if spec else []


def _runs() -> dict[str | None, list[str]]:
    """The node ids of the table by the ``--model`` spec they need (None: the zoo)."""
    runs: dict[str | None, dict[str, list[str]]] = {}
    for mutant, node_ids in MUTANTS.items():
        runs.setdefault(WITH_MODEL.get(mutant), {})[mutant] = node_ids
    return {spec: all_node_ids(table) for spec, table in runs.items()}


def test_every_mutant_is_in_the_table():
    assert_table_complete(MUTANTS, mutants_module)


@pytest.mark.parametrize("spec", sorted(_runs(), key=str), ids=lambda spec: spec or "zoo")
def test_named_tests_exist(spec, runner, tmp_path):
    args = ["--devices", DEVICES, *_model_args(spec)]
    assert_collects(runner, args, _runs()[spec], tmp_path)


@pytest.mark.parametrize("spec", sorted(_runs(), key=str), ids=lambda spec: spec or "zoo")
def test_reference_passes_the_named_tests(spec, runner, tmp_path):
    args = ["--dp-impl", "reference", "--devices", DEVICES, *_model_args(spec)]
    assert_passes(runner, args, _runs()[spec], tmp_path)


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_is_caught(mutant, runner, tmp_path):
    args = ["--dp-impl", f"{mutants_module.__name__}:{mutant}", "--devices", DEVICES]
    args += _model_args(WITH_MODEL.get(mutant))
    assert_caught(runner, mutant, args, MUTANTS[mutant], tmp_path)
