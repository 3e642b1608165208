"""Deliberately broken DataParallel implementations, one fault each.

Every public function here is a mutant: a factory with ``torch.nn.DataParallel``'s
signature ``(module, device_ids, output_device=None, dim=0) -> nn.Module``, plugged
into the suites with ``--dp-impl tests.mutants.dp:<name>``. Each one is the reference
``harness.parallel.DataParallel`` with a single step (scatter, replicate,
parallel_apply or gather) replaced by a version carrying one realistic bug, the kind a
real data-parallel implementation has had or could plausibly have. None of them
crashes at random: each computes something wrong, or raises only where the wrong
computation itself cannot go on.

``tests/mutation/test_dp_mutants.py`` names, for every mutant, the suite tests that
must fail against it, and checks that every public function here is in that table.
Helpers are private (leading underscore) so they are not taken for mutants.
"""

import copy
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import nn

from harness.parallel import DataParallel
from harness.parallel._devices import DeviceLike, as_device
from harness.parallel.replicate import replicate
from harness.parallel.scatter_gather import gather, is_namedtuple, scatter_kwargs, scatter_tensor

log = logging.getLogger(__name__)

SplitTensor = Callable[[torch.Tensor, Sequence[torch.device], int], list]

# ---------------------------------------------------------------------------------------
# Shared helpers: the reference's scatter with a replaceable tensor splitter and leaf
# handling, so a scatter mutant differs from the reference in exactly one place.


def _scatter(
    obj: Any,
    devices: Sequence[torch.device],
    dim: int,
    split_tensor: SplitTensor = scatter_tensor,
    share: Callable[[Any], Any] = lambda obj: obj,
) -> list:
    def split(obj: Any) -> list:
        if isinstance(obj, torch.Tensor):
            return split_tensor(obj, devices, dim)
        if is_namedtuple(obj):
            return [type(obj)(*parts) for parts in zip(*map(split, obj))]
        if isinstance(obj, tuple) and obj:
            return list(zip(*map(split, obj)))
        if isinstance(obj, list) and obj:
            return [list(parts) for parts in zip(*map(split, obj))]
        if isinstance(obj, dict) and obj:
            return [type(obj)(parts) for parts in zip(*map(split, obj.items()))]
        return [share(obj) for _ in devices]

    return split(obj)


def _scatter_kwargs(
    inputs: tuple,
    kwargs: dict,
    devices: Sequence[torch.device],
    dim: int,
    **how: Any,
) -> tuple[tuple, tuple[dict, ...]]:
    """``harness.parallel.scatter_kwargs`` built on ``_scatter``."""
    split_inputs = _scatter(inputs, devices, dim, **how) if inputs else []
    split_kwargs = _scatter(kwargs, devices, dim, **how) if kwargs else []
    if split_inputs and split_kwargs:
        count = min(len(split_inputs), len(split_kwargs))
        split_inputs, split_kwargs = split_inputs[:count], split_kwargs[:count]
    elif split_kwargs:
        split_inputs = [() for _ in split_kwargs]
    else:
        split_kwargs = [{} for _ in split_inputs]
    return tuple(split_inputs), tuple(split_kwargs)


def _map_tensors(fn: Callable[[torch.Tensor], Any], obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if is_namedtuple(obj):
        return type(obj)._make(_map_tensors(fn, item) for item in obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(fn, item) for item in obj)
    if isinstance(obj, dict):
        return type(obj)((key, _map_tensors(fn, value)) for key, value in obj.items())
    return obj


def _module_pairs(original: nn.Module, replica: nn.Module) -> Iterator[tuple[nn.Module, nn.Module]]:
    """Each submodule of ``original`` with its counterpart in ``replica`` (same structure)."""
    return zip(original.modules(), replica.modules(), strict=True)


def _plain_buffers(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The module's own buffers that replicate treats as state (not differentiable)."""
    for key, buf in module._buffers.items():
        if buf is not None and not buf.requires_grad:
            yield key, buf


class _Failure:
    def __init__(self, error: Exception) -> None:
        self.error = error


# ---------------------------------------------------------------------------------------
# Scatter faults


class _DropRemainder(DataParallel):
    def scatter(self, inputs: tuple, kwargs: dict, device_ids: Sequence[torch.device]) -> Any:
        return _scatter_kwargs(inputs, kwargs, device_ids, self.dim, split_tensor=_floor_chunks)


def _floor_chunks(tensor: torch.Tensor, devices: Sequence[torch.device], dim: int) -> list:
    batch, count = tensor.size(dim), len(devices)
    if batch % count == 0 or batch < count:
        return scatter_tensor(tensor, devices, dim)
    size = batch // count
    return [tensor.narrow(dim, i * size, size).to(d) for i, d in enumerate(devices)]


def drop_remainder(module, device_ids, output_device=None, dim=0):
    """Scatter gives every replica ``B // n`` rows and drops the ``B % n`` left over.

    The ``drop_last`` habit of samplers applied to a batch: 10 rows on 4 devices run as
    four chunks of 2, and the output has 8 rows. Batches that divide evenly, and
    batches smaller than the device count, are split correctly.
    """
    return _DropRemainder(module, device_ids, output_device, dim)


class _TensorSplitChunks(DataParallel):
    def scatter(self, inputs: tuple, kwargs: dict, device_ids: Sequence[torch.device]) -> Any:
        return _scatter_kwargs(inputs, kwargs, device_ids, self.dim, split_tensor=_tensor_split)


def _tensor_split(tensor: torch.Tensor, devices: Sequence[torch.device], dim: int) -> list:
    chunks = tensor.tensor_split(len(devices), dim)
    return [chunk.to(device) for chunk, device in zip(chunks, devices)]


def tensor_split_chunks(module, device_ids, output_device=None, dim=0):
    """Scatter uses ``tensor_split`` (numpy's ``array_split``) instead of ``chunk``.

    Every row still arrives, but the chunk sizes are wrong: 10 rows on 4 devices become
    3, 3, 2, 2 instead of 3, 3, 3, 1, and a batch smaller than the device count still
    uses every device, the extra ones with empty chunks (2 rows on 4: 1, 1, 0, 0).
    """
    return _TensorSplitChunks(module, device_ids, output_device, dim)


class _KwargsNotScattered(DataParallel):
    def scatter(self, inputs: tuple, kwargs: dict, device_ids: Sequence[torch.device]) -> Any:
        split_inputs, _ = scatter_kwargs(inputs, {}, device_ids, dim=self.dim)
        if not split_inputs:
            split_inputs = ((),)
        return split_inputs, tuple(dict(kwargs) for _ in split_inputs)


def kwargs_not_scattered(module, device_ids, output_device=None, dim=0):
    """Positional arguments are scattered; keyword arguments go whole to every replica.

    The classic hand-written ``replica(chunk, **kwargs)``: a batch-shaped keyword tensor
    (an attention mask, per-row weights) reaches each replica with all B rows, so it is
    misaligned with the chunk (or broadcasts silently where shapes allow).
    """
    return _KwargsNotScattered(module, device_ids, output_device, dim)


class _KwargsPaddedLikeTorch(DataParallel):
    def scatter(self, inputs: tuple, kwargs: dict, device_ids: Sequence[torch.device]) -> Any:
        split_inputs = list(_scatter(inputs, device_ids, self.dim)) if inputs else []
        split_kwargs = list(_scatter(kwargs, device_ids, self.dim)) if kwargs else []
        if len(split_inputs) < len(split_kwargs):
            split_inputs += [() for _ in range(len(split_kwargs) - len(split_inputs))]
        elif len(split_kwargs) < len(split_inputs):
            split_kwargs += [{} for _ in range(len(split_inputs) - len(split_kwargs))]
        return tuple(split_inputs), tuple(split_kwargs)


def kwargs_padded_like_torch(module, device_ids, output_device=None, dim=0):
    """torch.nn.DataParallel's own ``scatter_kwargs``: the shorter side is padded, not cut.

    A non-tensor keyword argument is copied once per device while a small batch gives fewer
    chunks, so the positional side is padded with empty tuples and the replicas beyond the
    chunk count are called with the keyword arguments alone (pytorch issues 31460, 16432).
    A user's implementation that copies torch's code inherits the bug; only ``--dp-impl
    torch`` is excused it.
    """
    return _KwargsPaddedLikeTorch(module, device_ids, output_device, dim)


class _NonTensorArgsCopied(DataParallel):
    def scatter(self, inputs: tuple, kwargs: dict, device_ids: Sequence[torch.device]) -> Any:
        return _scatter_kwargs(inputs, kwargs, device_ids, self.dim, share=copy.deepcopy)


def non_tensor_args_copied(module, device_ids, output_device=None, dim=0):
    """Arguments that are not tensors are deep-copied for each replica, not shared.

    Meant to keep replicas from racing on a shared object, it breaks the contract that
    such objects are shared: a replica writing into a list, dict or object passed in
    writes into its private copy, and the caller never sees it.
    """
    return _NonTensorArgsCopied(module, device_ids, output_device, dim)


class _ScatterDetachesInputs(DataParallel):
    def scatter(self, inputs: tuple, kwargs: dict, device_ids: Sequence[torch.device]) -> Any:
        return _scatter_kwargs(inputs, kwargs, device_ids, self.dim, split_tensor=_detached_chunks)


def _detached_chunks(tensor: torch.Tensor, devices: Sequence[torch.device], dim: int) -> list:
    return [chunk.detach() for chunk in scatter_tensor(tensor, devices, dim)]


def scatter_detaches_inputs(module, device_ids, output_device=None, dim=0):
    """Scattered chunks are detached from the input, so no gradient reaches the input.

    Parameter gradients are right; an input that requires grad (an embedding output fed
    in, an adversarial input) gets no gradient, or ``None`` where it is a leaf.
    """
    return _ScatterDetachesInputs(module, device_ids, output_device, dim)


class _DimIgnored(DataParallel):
    def scatter(self, inputs: tuple, kwargs: dict, device_ids: Sequence[torch.device]) -> Any:
        return scatter_kwargs(inputs, kwargs, device_ids, dim=0)

    def gather(self, outputs: Sequence[Any], output_device: torch.device) -> Any:
        return gather(outputs, output_device, dim=0)


def dim_ignored(module, device_ids, output_device=None, dim=0):
    """``dim`` is stored but scatter and gather always use dimension 0.

    Right for batch-first data, wrong for time-major sequences (``dim=1``): replicas get
    slices of time steps instead of slices of the batch, and outputs are joined on the
    wrong dimension.
    """
    return _DimIgnored(module, device_ids, output_device, dim)


# ---------------------------------------------------------------------------------------
# Replicate faults


class _DetachedReplicas(DataParallel):
    def replicate(self, module: nn.Module, device_ids: Sequence[torch.device]) -> list:
        replicas = replicate(module, device_ids, detach=not torch.is_grad_enabled())
        copies = replicate(module, device_ids, detach=True)
        return replicas[:1] + copies[1:]


def detached_replicas(module, device_ids, output_device=None, dim=0):
    """Replicas after the first get detached copies of the parameters.

    As if broadcast with ``.data`` or under ``no_grad``: the first replica uses the
    original parameters and trains; the others compute correct outputs but their
    gradients never reach the module, so each parameter's gradient comes from the first
    chunk alone.
    """
    return _DetachedReplicas(module, device_ids, output_device, dim)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class _AveragedGradients(DataParallel):
    def replicate(self, module: nn.Module, device_ids: Sequence[torch.device]) -> list:
        replicas = super().replicate(module, device_ids)
        if not torch.is_grad_enabled():
            return replicas
        scale = 1.0 / len(replicas)
        for replica in replicas:
            for original, copy_ in _module_pairs(module, replica):
                for key, param in original._parameters.items():
                    if param is None:
                        continue
                    current = getattr(copy_, key)
                    copy_._parameters.pop(key, None)
                    setattr(copy_, key, _ScaleGrad.apply(current, scale))
        return replicas


def averaged_gradients(module, device_ids, output_device=None, dim=0):
    """Each replica's parameter gradient is scaled by 1/n, so they are averaged, not summed.

    DistributedDataParallel's convention carried over to DataParallel, where it is
    wrong: DataParallel computes one loss over the whole gathered batch, so the
    replicas' gradients must add up. Here every parameter gradient is n times too small
    (input gradients are right).
    """
    return _AveragedGradients(module, device_ids, output_device, dim)


class _StaleReplicas(DataParallel):
    def replicate(self, module: nn.Module, device_ids: Sequence[torch.device]) -> list:
        cache = self.__dict__.setdefault("_replica_cache", {})
        key = (len(device_ids), torch.is_grad_enabled())
        if key not in cache:
            cache[key] = super().replicate(module, device_ids)
        return cache[key]


def stale_replicas(module, device_ids, output_device=None, dim=0):
    """Replicas are built on the first forward and reused ("replicate is expensive").

    The first replica shares the original parameters and sees optimizer steps; the
    others keep the weights, buffers and train/eval mode of that first forward, so after
    an optimizer step, ``load_state_dict`` or ``.eval()`` they compute with stale state.
    The very first step is correct.
    """
    return _StaleReplicas(module, device_ids, output_device, dim)


class _SharedBuffers(DataParallel):
    def replicate(self, module: nn.Module, device_ids: Sequence[torch.device]) -> list:
        replicas = super().replicate(module, device_ids)
        for replica in replicas[1:]:
            for original, copy_ in _module_pairs(module, replica):
                for key, buf in _plain_buffers(original):
                    copy_._buffers[key] = buf
        return replicas


def shared_buffers(module, device_ids, output_device=None, dim=0):
    """Every replica uses the original buffers, so every replica updates them in place.

    "Buffers are not trained, so no need to copy them": BatchNorm's running statistics
    take one momentum update per replica per step (and ``num_batches_tracked`` counts n
    per step) instead of one update from the first chunk.
    """
    return _SharedBuffers(module, device_ids, output_device, dim)


class _BNStatsFromLastChunk(DataParallel):
    def replicate(self, module: nn.Module, device_ids: Sequence[torch.device]) -> list:
        replicas = super().replicate(module, device_ids)
        if len(replicas) < 2:
            return replicas
        first, last = replicas[0], replicas[-1]
        for (original, copy_first), (_, copy_last) in zip(
            _module_pairs(module, first), _module_pairs(module, last), strict=True
        ):
            for key, buf in _plain_buffers(original):
                copy_last._buffers[key] = buf
                copy_first._buffers[key] = buf.detach().clone()
        return replicas


def bn_stats_from_last_chunk(module, device_ids, output_device=None, dim=0):
    """The original buffers go to the last replica instead of the first.

    An off-by-one in which replica shares the module's buffers: running statistics
    (BatchNorm) are updated from the last chunk, not the first as in
    ``torch.nn.DataParallel``. Outputs and gradients are right.
    """
    return _BNStatsFromLastChunk(module, device_ids, output_device, dim)


class _BuffersAllCopied(DataParallel):
    def replicate(self, module: nn.Module, device_ids: Sequence[torch.device]) -> list:
        replicas = super().replicate(module, device_ids)
        for original, copy_ in _module_pairs(module, replicas[0]):
            for key, buf in _plain_buffers(original):
                copy_._buffers[key] = buf.detach().clone()
        return replicas


def buffers_all_copied(module, device_ids, output_device=None, dim=0):
    """Every replica, the first included, gets copies of the buffers.

    "Replicas must not write into the module": in-place buffer updates are all
    discarded with the replicas, so BatchNorm's running statistics never move while
    training under DataParallel, and eval-mode outputs later use the initial ones.
    """
    return _BuffersAllCopied(module, device_ids, output_device, dim)


class _ModuleAsFirstReplica(DataParallel):
    def replicate(self, module: nn.Module, device_ids: Sequence[torch.device]) -> list:
        replicas = super().replicate(module, device_ids)
        return [module, *replicas[1:]]


def module_as_first_replica(module, device_ids, output_device=None, dim=0):
    """The first replica is the wrapped module itself, not a shallow copy of it.

    "It already lives on device_ids[0], why copy it": outputs, gradients and buffer
    updates are right, but Python attribute writes made in the first replica's forward
    (counters, caches, ``self.last_...``) persist on the module, where
    ``torch.nn.DataParallel`` discards them with its replicas.
    """
    return _ModuleAsFirstReplica(module, device_ids, output_device, dim)


# ---------------------------------------------------------------------------------------
# parallel_apply faults


class _Guarded:
    """A replica that returns its exception instead of raising it."""

    def __init__(self, replica: nn.Module) -> None:
        self.replica = replica

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.replica(*args, **kwargs)
        except Exception as error:
            return _Failure(error)


class _SwallowedExceptions(DataParallel):
    def parallel_apply(self, replicas: Sequence[nn.Module], inputs: Sequence, kwargs: Any) -> list:
        outputs = super().parallel_apply([_Guarded(r) for r in replicas], inputs, kwargs)
        good = [out for out in outputs if not isinstance(out, _Failure)]
        if not good:
            raise outputs[0].error
        filler = _map_tensors(torch.zeros_like, good[0])
        for i, out in enumerate(outputs):
            if isinstance(out, _Failure):
                log.warning("replica %d failed, its output is replaced by zeros: %r", i, out.error)
                outputs[i] = filler
        return outputs


def swallowed_exceptions(module, device_ids, output_device=None, dim=0):
    """A replica that raises is logged and its output replaced by zeros ("be robust").

    The zeros take the structure and shape of a replica that succeeded, so the step goes
    on with a plausible but wrong output. Only when every replica fails is the first
    error raised.
    """
    return _SwallowedExceptions(module, device_ids, output_device, dim)


class _InThreadDefault:
    """A replica that resets one piece of thread-local state to a new thread's default.

    The reference's workers re-enter the caller's grad mode, inference mode and
    autocast; wrapping the replica undoes one of them, as if the worker had never
    carried it.
    """

    def __init__(self, replica: nn.Module, default: Callable[[], AbstractContextManager]) -> None:
        self.replica = replica
        self.default = default

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.default():
            return self.replica(*args, **kwargs)


class _GradModeNotCarried(DataParallel):
    def parallel_apply(self, replicas: Sequence[nn.Module], inputs: Sequence, kwargs: Any) -> list:
        threads_default = [_InThreadDefault(r, torch.enable_grad) for r in replicas]
        return super().parallel_apply(threads_default, inputs, kwargs)


def grad_mode_not_carried(module, device_ids, output_device=None, dim=0):
    """Replica threads re-enter the caller's autocast and inference mode, but not grad mode.

    Grad mode is thread-local and a new thread starts with it on
    (``torch.nn.DataParallel`` had this bug before it carried grad mode into its
    threads). Under ``torch.no_grad()`` the replicas run with grad mode on: a module
    that asks ``torch.is_grad_enabled()`` (activation checkpointing, caches, custom
    autograd code) takes the training branch. Replicate still detaches under
    ``no_grad`` and gather runs in the caller's thread, so outputs do not require grad.
    """
    return _GradModeNotCarried(module, device_ids, output_device, dim)


class _AutocastNotCarried(DataParallel):
    def parallel_apply(self, replicas: Sequence[nn.Module], inputs: Sequence, kwargs: Any) -> list:
        kind = self.src_device.type

        def autocast_off() -> AbstractContextManager:
            return torch.autocast(kind, enabled=False)

        threads_default = [_InThreadDefault(r, autocast_off) for r in replicas]
        return super().parallel_apply(threads_default, inputs, kwargs)


def autocast_not_carried(module, device_ids, output_device=None, dim=0):
    """Replica threads re-enter the caller's grad and inference mode but not autocast.

    Autocast is thread-local and off in a new thread; a replica thread that does not
    re-enter it runs in full precision, so under ``torch.autocast`` the outputs come
    back float32 where the single-device module gives bfloat16 or float16.
    """
    return _AutocastNotCarried(module, device_ids, output_device, dim)


class _InferenceModeNotCarried(DataParallel):
    def parallel_apply(self, replicas: Sequence[nn.Module], inputs: Sequence, kwargs: Any) -> list:
        grad = torch.is_grad_enabled()

        @contextmanager
        def outside_inference_mode() -> Iterator[None]:
            # Leaving inference mode turns grad mode back on; the caller's is re-entered.
            with torch.inference_mode(False), torch.set_grad_enabled(grad):
                yield

        threads_default = [_InThreadDefault(r, outside_inference_mode) for r in replicas]
        return super().parallel_apply(threads_default, inputs, kwargs)


def inference_mode_not_carried(module, device_ids, output_device=None, dim=0):
    """Replica threads re-enter the caller's grad mode but not inference mode.

    What ``torch.nn.DataParallel`` does: under ``torch.inference_mode()`` the replicas
    run with grad off but outside inference mode, so a module that updates its input
    chunk in place fails there although it works on one device.
    """
    return _InferenceModeNotCarried(module, device_ids, output_device, dim)


# A new thread's autocast dtype, whatever the caller chose.
_THREAD_DEFAULT_AUTOCAST = {"cpu": torch.bfloat16, "cuda": torch.float16}


class _AutocastDtypeNotCarried(DataParallel):
    def parallel_apply(self, replicas: Sequence[nn.Module], inputs: Sequence, kwargs: Any) -> list:
        kind = self.src_device.type
        enabled = torch.is_autocast_enabled(kind)

        def default_dtype() -> AbstractContextManager:
            return torch.autocast(kind, enabled=enabled, dtype=_THREAD_DEFAULT_AUTOCAST[kind])

        threads_default = [_InThreadDefault(r, default_dtype) for r in replicas]
        return super().parallel_apply(threads_default, inputs, kwargs)


def autocast_dtype_not_carried(module, device_ids, output_device=None, dim=0):
    """Replica threads re-enter autocast's on/off state but not its dtype.

    What ``torch.nn.DataParallel`` does: under ``torch.autocast("cuda",
    dtype=torch.bfloat16)`` its replicas compute in float16, the thread default.
    """
    return _AutocastDtypeNotCarried(module, device_ids, output_device, dim)


# ---------------------------------------------------------------------------------------
# Gather faults


class _ReversedGather(DataParallel):
    def gather(self, outputs: Sequence[Any], output_device: torch.device) -> Any:
        return gather(list(reversed(outputs)), output_device, dim=self.dim)


def reversed_gather(module, device_ids, output_device=None, dim=0):
    """Outputs are gathered last replica first, as when results are popped off a stack.

    Every row is present and right, but the chunks are out of order: rows no longer
    line up with the inputs (or the labels).
    """
    return _ReversedGather(module, device_ids, output_device, dim)


def _gather_plain(outputs: Sequence[Any], target_device: DeviceLike, dim: int) -> Any:
    target = as_device(target_device)

    def join(outputs: Sequence[Any]) -> Any:
        first = outputs[0]
        if isinstance(first, torch.Tensor):
            return gather(outputs, target, dim)
        if first is None:
            return None
        if isinstance(first, dict):
            return {key: join([out[key] for out in outputs]) for key in first}
        if isinstance(first, (list, tuple)):
            return tuple(map(join, zip(*outputs, strict=True)))
        raise TypeError(f"cannot gather outputs of type {type(first).__name__}")

    return join(outputs)


class _NestedTypesLost(DataParallel):
    def gather(self, outputs: Sequence[Any], output_device: torch.device) -> Any:
        return _gather_plain(outputs, output_device, self.dim)


def nested_types_lost(module, device_ids, output_device=None, dim=0):
    """Gather rebuilds containers as plain ``tuple`` and ``dict``.

    ``type(first)(generator)`` fails for namedtuples, and the usual fix is ``tuple(...)``
    for every sequence: namedtuples lose their fields, lists become tuples, and dict
    subclasses (``OrderedDict``, ``ModelOutput``-like types) become plain dicts.
    Tensor values are right.
    """
    return _NestedTypesLost(module, device_ids, output_device, dim)


class _OutputDeviceIgnored(DataParallel):
    def gather(self, outputs: Sequence[Any], output_device: torch.device) -> Any:
        return gather(outputs, self.src_device, dim=self.dim)


def output_device_ignored(module, device_ids, output_device=None, dim=0):
    """``output_device`` is stored but outputs are always gathered on ``device_ids[0]``.

    The default case is right; a caller that asks for the outputs on the CPU or another
    GPU (to gather a large output off the busiest card) gets them on the first device.
    """
    return _OutputDeviceIgnored(module, device_ids, output_device, dim)


# ---------------------------------------------------------------------------------------
# Faults that show with real models and training loops (suites/dp/test_models.py and
# test_training_loops.py)


class _UntiedReplicas(DataParallel):
    def replicate(self, module: nn.Module, device_ids: Sequence[torch.device]) -> list:
        replicas = super().replicate(module, device_ids)
        for replica in replicas[1:]:
            seen: set[int] = set()
            for original, copy_ in _module_pairs(module, replica):
                for key, param in original._parameters.items():
                    if param is None:
                        continue
                    if id(param) in seen:
                        setattr(copy_, key, getattr(copy_, key).detach().clone())
                    seen.add(id(param))
        return replicas


def untied_replicas(module, device_ids, output_device=None, dim=0):
    """In replicas after the first, a parameter shared by two modules becomes two tensors.

    Each module's parameters copied on their own ("one broadcast per module"), so a tied
    embedding and output head are tied in the first replica only; in the others the second
    use is a detached copy, and its share of the gradient is lost.
    """
    return _UntiedReplicas(module, device_ids, output_device, dim)


class _IntegerInputsCast(DataParallel):
    def scatter(self, inputs: tuple, kwargs: dict, device_ids: Sequence[torch.device]) -> Any:
        floating = [p.dtype for p in self.module.parameters() if p.dtype.is_floating_point]
        if floating:
            inputs, kwargs = _map_tensors(lambda t: t.to(floating[0]), (inputs, kwargs))
        return super().scatter(inputs, kwargs, device_ids)


def integer_inputs_cast(module, device_ids, output_device=None, dim=0):
    """Every input is moved with ``.to(device, dtype)``, the module's parameter dtype.

    Right for float inputs (an AMP-minded "match the model's precision"), wrong for token
    ids: an embedding receives floats and refuses them, and a model that only compares ids
    (padding masks) silently computes with floats.
    """
    return _IntegerInputsCast(module, device_ids, output_device, dim)


class _ZeroNonFinite(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


class _GradientsSanitised(DataParallel):
    def replicate(self, module: nn.Module, device_ids: Sequence[torch.device]) -> list:
        replicas = super().replicate(module, device_ids)
        if not torch.is_grad_enabled():
            return replicas
        for replica in replicas[1:]:
            for original, copy_ in _module_pairs(module, replica):
                for key, param in original._parameters.items():
                    if param is not None:
                        setattr(copy_, key, _ZeroNonFinite.apply(getattr(copy_, key)))
        return replicas


def gradients_sanitised(module, device_ids, output_device=None, dim=0):
    """Non-finite gradients of replicas after the first are zeroed before they are summed.

    "One replica's overflow must not poison the others": the inf a float16 overflow puts in
    a gradient never reaches the summed gradient, so ``GradScaler`` sees no overflow, keeps
    its scale, and steps on a gradient missing that replica's share.
    """
    return _GradientsSanitised(module, device_ids, output_device, dim)


class _AccumulationOverwrites(DataParallel):
    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            for param in self.module.parameters():
                param.grad = None
        return super().forward(*inputs, **kwargs)


def accumulation_overwrites(module, device_ids, output_device=None, dim=0):
    """Every training forward clears the parameters' gradients first.

    "Replicas start from zero gradients", done on the module: one step per batch is
    right, but accumulating micro-batches keeps only the last one's gradient.
    """
    return _AccumulationOverwrites(module, device_ids, output_device, dim)


class _StateDictWithoutPrefix(DataParallel):
    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


def state_dict_without_prefix(module, device_ids, output_device=None, dim=0):
    """``state_dict()`` and ``load_state_dict()`` are the inner module's, without ``module.``.

    "Checkpoints should load anywhere": but every script written for torch's wrappers
    strips the prefix it expects, or saves ``model.module.state_dict()``, and a checkpoint
    of this wrapper no longer tells a wrapped model's from a plain one's.
    """
    return _StateDictWithoutPrefix(module, device_ids, output_device, dim)


class _ArrivalOrderBroadcast(torch.autograd.Function):
    """Broadcast whose backward sums the replicas' gradients in an order that varies."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, *devices: torch.device) -> tuple:
        ctx.source = tensor.device
        return tuple(tensor.detach().clone().to(device) for device in devices)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple:
        present = [grad.to(ctx.source) for grad in grads if grad is not None]
        _ARRIVALS.shuffle(present)  # thread timing, made repeatable in kind, not in order
        total = None
        for grad in present:
            total = grad if total is None else total + grad
        return (total, *(None for _ in grads))


_ARRIVALS = random.Random()  # seeded from the OS: not reset by torch.manual_seed


class _NondeterministicReduction(DataParallel):
    def replicate(self, module: nn.Module, device_ids: Sequence[torch.device]) -> list:
        replicas = super().replicate(module, device_ids)
        if not torch.is_grad_enabled():
            return replicas
        params = list(module.parameters())
        copies = {id(p): _ArrivalOrderBroadcast.apply(p, *device_ids) for p in params}
        for j, replica in enumerate(replicas):
            for original, copy_ in _module_pairs(module, replica):
                for key, param in original._parameters.items():
                    if param is not None:
                        setattr(copy_, key, copies[id(param)][j])
        return replicas


def nondeterministic_reduction(module, device_ids, output_device=None, dim=0):
    """Replica gradients are summed in the order the replicas' backward finished.

    Autograd left to itself (one accumulation per replica into the parameter's gradient)
    adds them in the order the engine's threads deliver them. Floating-point addition is
    not associative, so the same seed gives parameters that differ in the last bits from
    one run to the next. Here that order is drawn at random on every backward.
    """
    return _NondeterministicReduction(module, device_ids, output_device, dim)
