"""The DistributedDataParallel module: state broadcast, forward, no_sync and join.

The gradient averaging itself lives in ``reducer.py``, the bucket layout in
``buckets.py``, the broadcast and sparse collectives in ``collectives.py``.
"""

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.join import Join, Joinable, JoinHook

from ._devices import DeviceLike, as_device
from .collectives import broadcast_coalesced, verify_same_shapes
from .reducer import Reducer
from .scatter_gather import is_namedtuple

DEFAULT_BUCKET_CAP_MB = 25


class DistributedDataParallel(nn.Module, Joinable):
    """A reference for ``torch.nn.parallel.DistributedDataParallel``, written in Python.

    Create it in every rank after ``torch.distributed.init_process_group``, around
    that rank's copy of the module (on CUDA, moved to ``device_ids[0]`` first):

    - construction broadcasts rank 0's parameters and buffers to every rank (exact
      copies), after checking that all ranks hold the same shapes;
    - backward averages gradients across ranks: parameters are grouped into buckets
      of about ``bucket_cap_mb`` MiB in reverse registration order, each bucket's
      all-reduce is launched asynchronously as soon as its gradients are ready, and
      all are waited for and written back when backward ends;
    - each forward first broadcasts rank 0's buffers, when ``broadcast_buffers``
      (exactly when torch does: unless the previous forward ran under ``no_sync``
      or without grad mode);
    - ``no_sync()`` accumulates gradients locally; the first backward after a
      forward outside it averages the accumulated gradients;
    - ``join()`` trains on uneven inputs: a rank out of inputs shadows the others'
      collectives with zeros (``torch.distributed.algorithms.join.Join``);
    - parameters that get no gradient in a synchronising backward raise the same
      ``RuntimeError`` on every rank, naming them, at the end of that backward,
      unless ``find_unused_parameters=True`` (or ``static_graph=True``): then they
      take part with zeros, and one that no rank used keeps its ``.grad``;
    - ``nn.Embedding`` / ``nn.EmbeddingBag`` with ``sparse=True`` get sparse
      gradients, summed with all-gathers and averaged.

    It runs on any device and backend ``torch.distributed`` supports (NCCL, gloo,
    CUDA or CPU tensors) and on any ``process_group``.

    Deliberate differences from torch's DDP:

    - every synchronising backward also all-reduces one small int32 tensor (how
      many ranks used each parameter) and reads it on the host, so every rank
      agrees on unused parameters: an unused parameter fails on every rank at the
      end of the backward it was unused in (torch: at the next forward, on the
      ranks whose reduction did not finish);
    - with ``find_unused_parameters=True``, unused parameters are detected when
      backward ends, not by walking the graph after forward, so their buckets are
      all-reduced at the end of backward instead of early;
    - buckets keep their initial layout (torch rebuilds them once, in the order
      gradients arrived in the first iteration) and there is no smaller first bucket;
    - under ``join()``, buffers and the final model are broadcast from the
      lowest-numbered rank still training / among the last to join (torch: the
      highest-numbered); with ``find_unused_parameters``, a parameter only joined
      ranks used is unused (its ``.grad`` kept; torch counts the joined ranks' last
      iteration and gives it zeros); each forward under ``join``
      costs one more small all-reduce (which ranks still train, and whether this
      iteration synchronises gradients and buffers);
    - ``gradient_as_bucket_view``, ``check_reduction``, ``dim`` and
      ``batched_grad_copy`` are accepted and ignored (gradients are always copied);
      ``static_graph=True`` only allows unused parameters; ``mixed_precision``,
      ``device_mesh``, ``delay_all_reduce_named_params``/``param_to_hook_all_reduce``,
      ``skip_all_reduce_unused_params`` and ``bucket_cap_mb_list`` are refused with a
      ``ValueError``; there are no communication hooks (``register_comm_hook``);
    - reentrant backward (``torch.utils.checkpoint`` with ``use_reentrant=True``) is
      not supported; the module cannot be pickled or deep-copied.
    """

    def __init__(
        self,
        module: nn.Module,
        device_ids: Sequence[DeviceLike] | None = None,
        output_device: DeviceLike | None = None,
        dim: int = 0,
        broadcast_buffers: bool = True,
        init_sync: bool = True,
        process_group: dist.ProcessGroup | None = None,
        bucket_cap_mb: float | None = None,
        find_unused_parameters: bool = False,
        check_reduction: bool = False,
        gradient_as_bucket_view: bool = False,
        static_graph: bool = False,
        delay_all_reduce_named_params: Any = None,
        param_to_hook_all_reduce: Any = None,
        mixed_precision: Any = None,
        device_mesh: Any = None,
        skip_all_reduce_unused_params: bool = False,
        bucket_cap_mb_list: Any = None,
        batched_grad_copy: bool = False,
        forward_sync_buffers: bool | None = None,
    ) -> None:
        super().__init__()
        Joinable.__init__(self)
        _refuse_unsupported(
            delay_all_reduce_named_params=delay_all_reduce_named_params,
            param_to_hook_all_reduce=param_to_hook_all_reduce,
            mixed_precision=mixed_precision,
            device_mesh=device_mesh,
            skip_all_reduce_unused_params=skip_all_reduce_unused_params or None,
            bucket_cap_mb_list=bucket_cap_mb_list,
        )
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "DistributedDataParallel needs an initialised process group: call "
                "torch.distributed.init_process_group first"
            )
        self.module = module
        self.process_group = dist.group.WORLD if process_group is None else process_group
        self.dim = dim
        self.find_unused_parameters = find_unused_parameters
        self.static_graph = static_graph
        self.gradient_as_bucket_view = gradient_as_bucket_view
        self.require_backward_grad_sync = True
        self.require_forward_param_sync = True
        if forward_sync_buffers is not None:  # torch 2.13's spelling: init sync always
            self.broadcast_buffers = forward_sync_buffers
            init_sync_buffers = True
        else:
            self.broadcast_buffers = broadcast_buffers
            init_sync_buffers = broadcast_buffers
        if bucket_cap_mb is None:
            bucket_cap_mb = DEFAULT_BUCKET_CAP_MB
        self.bucket_bytes_cap = int(bucket_cap_mb * 1024 * 1024)
        if check_reduction:
            warnings.warn(
                "check_reduction is deprecated in torch's DDP and ignored here",
                FutureWarning,
                stacklevel=2,
            )

        self._ignored = set(getattr(module, "_ddp_params_and_buffers_to_ignore", ()))
        names, params, sparse = _parameters(module, self._ignored)
        if not params:
            raise RuntimeError(
                "DistributedDataParallel is not needed when a module doesn't have any "
                "parameter that requires a gradient."
            )
        self.device = params[0].device
        self.device_ids, self.output_device = _check_devices(
            params, device_ids, output_device, self.device
        )
        self._divide_by_initial_world_size = True

        if init_sync:
            state = [(n, p) for n, p in module.named_parameters() if n not in self._ignored]
            if init_sync_buffers:
                state += self._named_buffers()
            verify_same_shapes([t for _, t in state], [n for n, _ in state], self.process_group)
            with torch.no_grad():
                broadcast_coalesced([t for _, t in state], 0, self.process_group)

        self.reducer = Reducer(
            params,
            names,
            sparse,
            self.process_group,
            self.bucket_bytes_cap,
            allow_unused=find_unused_parameters or static_graph,
        )

    # -- forward ----------------------------------------------------------------

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        with torch.autograd.profiler.record_function("harness.DistributedDataParallel.forward"):
            self.reducer.ensure_idle()
            grad_enabled = torch.is_grad_enabled()
            sync = grad_enabled and self.require_backward_grad_sync
            sync_buffers = self.require_forward_param_sync
            divisor = self._world_size
            authority = 0
            if self._join_config.enable:
                work = Join.notify_join_context(self)
                active, _, sync_buffers = self._agree(True, sync, sync_buffers)
                if work is not None:
                    work.wait()
                authority = active[0]
                if not self._divide_by_initial_world_size:
                    divisor = len(active)
            if sync_buffers:
                self._broadcast_buffers(authority)
            if grad_enabled:
                self.reducer.prepare(sync, divisor)
            self.require_forward_param_sync = sync

            if self.device_ids:
                inputs = _move(inputs, self.device)
                kwargs = _move(kwargs, self.device)
            output = self.module(*inputs, **kwargs)
            if sync:
                for tensor in _tensors(output):
                    if tensor.grad_fn is not None:
                        tensor.register_hook(self.reducer.on_output_grad)
            return output

    @property
    def _world_size(self) -> int:
        return dist.get_world_size(self.process_group)

    def _named_buffers(self) -> list[tuple[str, torch.Tensor]]:
        # Collected afresh every time: modules may replace their buffers.
        return [(n, b) for n, b in self.module.named_buffers() if n not in self._ignored]

    def _broadcast_buffers(self, src: int) -> None:
        """Rank ``src``'s buffers (a group rank) on every rank, if broadcasting buffers."""
        buffers = [b for _, b in self._named_buffers()]
        if self.broadcast_buffers and buffers:
            with torch.no_grad():
                broadcast_coalesced(buffers, src, self.process_group)

    # -- no_sync --------------------------------------------------------------

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Forwards inside skip gradient synchronisation; gradients accumulate locally.

        The decision is taken at forward: the first backward after a forward outside
        the context averages everything accumulated since.
        """
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    # -- join -----------------------------------------------------------------

    @contextlib.contextmanager
    def join(
        self,
        divide_by_initial_world_size: bool = True,
        enable: bool = True,
        throw_on_early_termination: bool = False,
    ) -> Iterator[None]:
        """Train on uneven inputs: ``with ddp.join(): for x in my_inputs: ...``.

        A rank that runs out of inputs waits at the end of the block, taking part
        with zeros in the collectives of every forward and backward the other ranks
        still run; when all have finished, the model of a rank among the last to
        finish is broadcast to all. Gradients are divided by the initial world size,
        or by the number of ranks still training when ``divide_by_initial_world_size``
        is false. Inside the block every forward with grad mode on must be followed
        by one backward (as in torch).
        """
        try:
            with Join(
                [self],
                enable,
                throw_on_early_termination,
                divide_by_initial_world_size=divide_by_initial_world_size,
            ):
                yield
        finally:
            self._join_config = type(self._join_config).construct_disabled_join_config()
            self._divide_by_initial_world_size = True

    def join_hook(self, **kwargs: Any) -> JoinHook:
        return _DDPJoinHook(self, kwargs.get("divide_by_initial_world_size", True))

    @property
    def join_device(self) -> torch.device:
        return self.device

    @property
    def join_process_group(self) -> dist.ProcessGroup:
        return self.process_group

    def _agree(self, active: bool, sync: bool, sync_buffers: bool) -> tuple[list[int], bool, bool]:
        """One all-reduce under ``join``: which ranks are still training, and whether
        this iteration synchronises gradients and buffers (a joined rank passes
        ``active=False`` and contributes nothing)."""
        size = self._world_size
        flags = torch.zeros(size + 2, dtype=torch.int32, device=self.device)
        if active:
            flags[dist.get_rank(self.process_group)] = 1
            flags[size] = int(sync)
            flags[size + 1] = int(sync_buffers)
        dist.all_reduce(flags, group=self.process_group)
        values = flags.tolist()
        ranks = [rank for rank in range(size) if values[rank]]
        return ranks, values[size] > 0, values[size + 1] > 0

    def _sync_final_model(self, is_last_joiner: bool) -> None:
        size = self._world_size
        flags = torch.zeros(size, dtype=torch.int32, device=self.device)
        flags[dist.get_rank(self.process_group)] = int(is_last_joiner)
        dist.all_reduce(flags, group=self.process_group)
        src = flags.tolist().index(1)
        state = [p for n, p in self.module.named_parameters() if n not in self._ignored]
        if self.broadcast_buffers:
            state += [b for _, b in self._named_buffers()]
        with torch.no_grad():
            broadcast_coalesced(state, src, self.process_group)

    def __getstate__(self) -> dict:
        raise TypeError(
            "harness DistributedDataParallel cannot be pickled or copied (it holds a process "
            "group and autograd hooks); copy or save its .module instead"
        )


class _DDPJoinHook(JoinHook):
    """A joined rank's side of each iteration the other ranks still run."""

    def __init__(self, ddp: DistributedDataParallel, divide_by_initial_world_size: bool) -> None:
        self.ddp = ddp
        ddp._divide_by_initial_world_size = divide_by_initial_world_size

    def main_hook(self) -> None:
        ddp = self.ddp
        active, sync, sync_buffers = ddp._agree(False, False, False)
        if sync_buffers:
            ddp._broadcast_buffers(active[0])
        ddp.require_forward_param_sync = sync
        if sync:
            ddp.reducer.shadow()

    def post_hook(self, is_last_joiner: bool) -> None:
        self.ddp._sync_final_model(is_last_joiner)


def _refuse_unsupported(**options: Any) -> None:
    for name, value in options.items():
        if value is not None:
            raise ValueError(
                f"harness DistributedDataParallel does not support {name}={value!r}; "
                "use torch's (--ddp-impl torch) to test it"
            )


def _parameters(
    module: nn.Module, ignored: set[str]
) -> tuple[list[str], list[nn.Parameter], list[bool]]:
    """Names, parameters requiring grad (each once) and whether each gets sparse gradients."""
    names, params, sparse, seen = [], [], [], set()
    for module_name, child in module.named_modules():
        for param_name, param in child.named_parameters(recurse=False):
            name = f"{module_name}.{param_name}" if module_name else param_name
            if not param.requires_grad or name in ignored or param in seen:
                continue
            if isinstance(param, nn.parameter.UninitializedParameter):
                raise RuntimeError(
                    "Modules with uninitialized parameters can't be used with "
                    "DistributedDataParallel; run a dummy forward pass first"
                )
            seen.add(param)
            names.append(name)
            params.append(param)
            sparse.append(isinstance(child, (nn.Embedding, nn.EmbeddingBag)) and child.sparse)
    return names, params, sparse


def _check_devices(
    params: Sequence[nn.Parameter],
    device_ids: Sequence[DeviceLike] | None,
    output_device: DeviceLike | None,
    device: torch.device,
) -> tuple[list[int] | None, int | None]:
    """torch's rule: ``device_ids`` names the one device of a single-device accelerator module."""
    devices = {p.device for p in params}
    if len({d.type for d in devices}) > 1:
        raise ValueError(
            "DistributedDataParallel's module must be on one type of device, but its "
            f"parameters are on {sorted(map(str, devices))}"
        )
    if not device_ids:
        if output_device is not None:
            raise ValueError("output_device needs device_ids")
        return None, None
    if len(device_ids) > 1:
        raise ValueError("device_ids can only be None or contain a single element.")
    target = as_device(device_ids[0])
    if len(devices) > 1 or device.type == "cpu" or target != device:
        raise ValueError(
            f"device_ids {list(device_ids)} must name the one device the module is on, and "
            f"only for an accelerator module; its parameters are on "
            f"{sorted(map(str, devices))} (pass device_ids=None for CPU or multi-device modules)"
        )
    out = target if output_device is None else as_device(output_device)
    return [target.index], out.index


def _move(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor inside moved to ``device`` (containers rebuilt)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if is_namedtuple(obj):
        return type(obj)(*(_move(item, device) for item in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_move(item, device) for item in obj)
    if isinstance(obj, dict):
        return type(obj)((key, _move(value, device)) for key, value in obj.items())
    return obj


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)
