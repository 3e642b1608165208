"""Deliberately broken DistributedDataParallel implementations, one fault each.

Every public function here is a mutant: a factory with torch's DDP signature
``(module, device_ids=None, **kwargs) -> nn.Module``, plugged into the suites with
``--ddp-impl tests.mutants.ddp:<name>``. Each is the reference
``harness.parallel.DistributedDataParallel`` with one step (the initial broadcast, the
buffer broadcast, ``no_sync``, ``join``, or a step of its gradient reducer) replaced by a
version carrying one realistic bug. None crashes at random: each computes something
wrong, or accepts what it should refuse, and issues the same collectives on every rank
as the reference does (a mutant that hung would cost a timeout, not teach anything).

``tests/mutation/test_ddp_mutants.py`` names, for every mutant, the suite tests that must
fail against it, and checks that every public function here is in that table. Helpers
are private (leading underscore) so they are not taken for mutants.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from harness.parallel import DistributedDataParallel
from harness.parallel.reducer import Reducer

# ---------------------------------------------------------------------------------------
# Shared helper: the reference with its reducer's class swapped for a subclass that
# overrides one step.


def _with_reducer(reducer_class: type[Reducer]) -> type[DistributedDataParallel]:
    class Mutant(DistributedDataParallel):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.reducer.__class__ = reducer_class

    Mutant.__name__ = f"DistributedDataParallel[{reducer_class.__name__}]"
    return Mutant


# ---------------------------------------------------------------------------------------
# Gradient averaging


class _SummingReducer(Reducer):
    def prepare(self, sync: bool, divisor: int) -> None:
        super().prepare(sync, 1)


def summed_gradients(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """All-reduces gradients without dividing by the world size: world_size times too large."""
    return _with_reducer(_SummingReducer)(module, device_ids, **kwargs)


class _TwiceDividingReducer(Reducer):
    def prepare(self, sync: bool, divisor: int) -> None:
        super().prepare(sync, divisor * divisor)


def divided_twice(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """Divides by the world size before the all-reduce and again after it."""
    return _with_reducer(_TwiceDividingReducer)(module, device_ids, **kwargs)


class _LastBucketNotWrittenBack(Reducer):
    def _launch(self, bucket) -> None:
        if bucket.index < len(self.buckets) - 1 or bucket.sparse:
            super()._launch(bucket)
            return
        # The last bucket is all-reduced into a scratch copy that is never written back:
        # the views keep this rank's local gradients (the collectives still match).
        with torch.no_grad():
            for index, view in zip(bucket.params, bucket.views):
                grad = self.params[index].grad
                view.copy_(torch.zeros_like(view) if grad is None else grad)
            scratch = bucket.flat.clone()
        self._results[bucket.index] = dist.all_reduce(scratch, group=self.group, async_op=True)


def one_bucket_never_reduced(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """Small buckets, and the last one's (the first layers') average is never written back.

    Those parameters keep this rank's local gradient; every other bucket is averaged.
    """
    kwargs.setdefault("bucket_cap_mb", 1 / 1024)  # 1 KiB: several buckets for the MLP
    return _with_reducer(_LastBucketNotWrittenBack)(module, device_ids, **kwargs)


class _OnlyRankZeroWritesBack(Reducer):
    def _write_back(self, counts: list[int]) -> None:
        if dist.get_rank(self.group) == 0:
            super()._write_back(counts)


def only_rank0_reduces(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """Every rank joins the all-reduce, but only rank 0 writes the average back.

    The other ranks keep their local gradients, and their parameters drift apart.
    """
    return _with_reducer(_OnlyRankZeroWritesBack)(module, device_ids, **kwargs)


# ---------------------------------------------------------------------------------------
# Module state


def no_initial_broadcast(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """Skips the broadcast of rank 0's parameters and buffers at construction."""
    kwargs["init_sync"] = False
    return DistributedDataParallel(module, device_ids, **kwargs)


class _NoBufferBroadcast(DistributedDataParallel):
    def _broadcast_buffers(self, src: int) -> None:
        pass


def no_buffer_broadcast(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """Never broadcasts buffers before forward: each rank's buffers drift on their own."""
    return _NoBufferBroadcast(module, device_ids, **kwargs)


class _BuffersFromLastRank(DistributedDataParallel):
    def _broadcast_buffers(self, src: int) -> None:
        super()._broadcast_buffers(self._world_size - 1)


def buffers_from_last_rank(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """Broadcasts the last rank's buffers at each forward instead of rank 0's."""
    return _BuffersFromLastRank(module, device_ids, **kwargs)


class _BroadcastBuffersIgnored(DistributedDataParallel):
    def _broadcast_buffers(self, src: int) -> None:
        always, self.broadcast_buffers = self.broadcast_buffers, True
        try:
            super()._broadcast_buffers(src)
        finally:
            self.broadcast_buffers = always


def broadcast_buffers_ignored(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """Broadcasts buffers at each forward even with ``broadcast_buffers=False``."""
    return _BroadcastBuffersIgnored(module, device_ids, **kwargs)


# ---------------------------------------------------------------------------------------
# no_sync, unused parameters, join


class _NoSyncIgnored(DistributedDataParallel):
    @contextmanager
    def no_sync(self) -> Iterator[None]:
        yield


def no_sync_ignored(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """``no_sync()`` exists but changes nothing: every backward inside it communicates."""
    return _NoSyncIgnored(module, device_ids, **kwargs)


def unused_parameters_accepted(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """Always tolerates unused parameters, as if ``find_unused_parameters=True`` were given.

    A model whose forward skips a parameter trains silently instead of failing.
    """
    kwargs["find_unused_parameters"] = True
    return DistributedDataParallel(module, device_ids, **kwargs)


class _JoinDividesByActiveRanks(DistributedDataParallel):
    def join(self, divide_by_initial_world_size: bool = True, **kwargs: Any):
        return super().join(divide_by_initial_world_size=False, **kwargs)


def join_divides_by_active_ranks(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """Under ``join``, divides by the ranks still training, ignoring the initial world size."""
    return _JoinDividesByActiveRanks(module, device_ids, **kwargs)


# ---------------------------------------------------------------------------------------
# Faults that show in training loops (suites/ddp/test_training_loops.py)


class _NonFiniteZeroingReducer(Reducer):
    def _launch(self, bucket) -> None:
        with torch.no_grad():
            for index in bucket.params:
                grad = self.params[index].grad
                if grad is not None and not grad.is_sparse:
                    torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0, out=grad)
        super()._launch(bucket)


def inf_sanitised_before_all_reduce(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """Zeroes each rank's non-finite gradient entries before the all-reduce.

    "One rank's overflow must not poison the others": the averaged gradient is finite, so
    every rank's ``GradScaler`` steps on it and keeps its scale, where it must skip the step
    and back off.
    """
    return _with_reducer(_NonFiniteZeroingReducer)(module, device_ids, **kwargs)


class _NoSyncNeverResyncs(DistributedDataParallel):
    @contextmanager
    def no_sync(self) -> Iterator[None]:
        self.require_backward_grad_sync = False
        yield


def no_sync_never_resyncs(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """``no_sync()`` turns synchronisation off and never turns it back on.

    The micro-batches inside it accumulate locally, as they should, but so does every
    backward after it: the ranks' gradients are never averaged again.
    """
    return _NoSyncNeverResyncs(module, device_ids, **kwargs)


class _StateDictWithoutPrefix(DistributedDataParallel):
    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


def state_dict_without_prefix(module: nn.Module, device_ids=None, **kwargs: Any) -> nn.Module:
    """``state_dict()`` and ``load_state_dict()`` are the inner module's, without ``module.``.

    Scripts written for torch's DDP save ``model.module.state_dict()`` or strip the prefix
    they expect; this wrapper's checkpoints no longer tell a wrapped model's from a plain
    one's.
    """
    return _StateDictWithoutPrefix(module, device_ids, **kwargs)
