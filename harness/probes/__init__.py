"""Probes: modules that record what each data-parallel replica received, and what the suites
expect them to receive.

A suite wraps a ``Probe`` with the implementation under test, calls it once, and then reads
``probe.calls``: one ``Call`` per replica call, holding the positional and keyword arguments
exactly as that replica got them, the thread it ran on and the device of its parameters. What
the implementation did is therefore observed, never recomputed by calling the implementation.

Replicas are shallow copies of the wrapped module (``torch.nn.DataParallel`` and the reference
both build them with ``Module._replicate_for_data_parallel``, which copies ``__dict__``), so a
list kept in the probe's ``__dict__`` is the same list object in every replica: their records
land in the original probe.

- ``expect``: the expected side, built independently of any implementation: ``chunk_sizes``
  (``torch.chunk``'s rule written out), ``expected_split`` (an argument structure narrowed to
  one chunk), ``assert_same_arguments`` (exact comparison: container types, dict key order,
  tensor contents, identity of non-tensors), and ``labelled``/``labels``: a random tensor whose
  entry at index 0 of every non-batch axis is the row's index in the batch, read back so a
  record says which rows it holds;
- ``probe``: ``Probe`` and ``Call``, ``in_batch_order``, and reading replica errors;
- ``side_effects``: modules whose forward updates buffers or rebinds attributes, and probe
  responses reporting grad and inference mode inside a replica.
"""

from harness.probes.expect import (
    assert_same_arguments,
    chunk_bounds,
    chunk_sizes,
    expected_split,
    labelled,
    labels,
    tensors_in,
)
from harness.probes.probe import (
    Call,
    Probe,
    Respond,
    called_without_positional_args,
    echo_tensors,
    in_batch_order,
    names_replica,
    replica_report,
)
from harness.probes.side_effects import (
    AttributeWrites,
    InPlaceBufferUpdates,
    report_grad_mode,
    report_inference_mode,
)

__all__ = [
    "AttributeWrites",
    "Call",
    "InPlaceBufferUpdates",
    "Probe",
    "Respond",
    "assert_same_arguments",
    "called_without_positional_args",
    "chunk_bounds",
    "chunk_sizes",
    "echo_tensors",
    "expected_split",
    "in_batch_order",
    "labelled",
    "labels",
    "names_replica",
    "replica_report",
    "report_grad_mode",
    "report_inference_mode",
    "tensors_in",
]
