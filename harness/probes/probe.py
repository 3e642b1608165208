"""The probe: a module recording what each data-parallel replica received, and helpers to read
its records and the errors replicas raise.
"""

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.probes.expect import labels, tensors_in

Respond = Callable[["Probe", tuple, dict], Any]


@dataclass(frozen=True)
class Call:
    """What one replica received in one call, and where it ran."""

    args: tuple
    kwargs: dict
    thread_id: int
    thread_name: str
    device: torch.device  # of the replica's parameters

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor received, positional first, in traversal order."""
        return list(tensors_in((self.args, self.kwargs)))

    def first_label(self, dim: int = 0) -> int:
        """The batch index of the first row of the first tensor received."""
        tensors = self.tensors()
        if not tensors or tensors[0].size(dim) == 0:
            raise ValueError("this call received no labelled rows")
        return labels(tensors[0], dim)[0]


def echo_tensors(probe: "Probe", args: tuple, kwargs: dict) -> tuple:
    """The default response: every tensor received, times the probe's gain of 1.

    The product keeps values exact and connects the output to the probe's
    parameter, so outputs require grad. Non-tensors are left out because
    DataParallel cannot gather them.
    """
    return tuple(t * probe.gain for t in tensors_in((args, kwargs)))


class Probe(nn.Module):
    """A module that records every call it (or any replica of it) receives.

    ``respond(probe, args, kwargs)`` computes the output (default
    ``echo_tensors``). ``rendezvous``, a ``threading.Barrier``, makes each call
    wait until that many calls are running at once: a check that replicas run
    concurrently (a serial implementation breaks the barrier after its timeout
    instead of hanging).
    """

    def __init__(
        self, respond: Respond = echo_tensors, rendezvous: threading.Barrier | None = None
    ) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))
        # Plain attributes live in __dict__, which replicas copy shallowly:
        # every replica appends to this same list.
        self.calls: list[Call] = []
        self.respond = respond
        self.rendezvous = rendezvous

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        thread = threading.current_thread()
        self.calls.append(Call(args, kwargs, thread.ident or 0, thread.name, self.gain.device))
        if self.rendezvous is not None:
            self.rendezvous.wait()
        return self.respond(self, args, kwargs)

    def reset(self) -> None:
        """Forget earlier calls (in place, so replicas made later share the list)."""
        self.calls.clear()


def in_batch_order(calls: Sequence[Call], dim: int = 0) -> list[Call]:
    """Calls sorted by the first batch row they received, i.e. by chunk."""
    return sorted(calls, key=lambda call: call.first_label(dim))


def called_without_positional_args(calls: Sequence[Call]) -> bool:
    """Whether some replica got no positional argument while others did.

    ``torch.nn.DataParallel`` does this when keyword arguments split into more
    pieces than the positional ones: it pads the positional side with empty
    tuples (pytorch issues 31460, 16432).
    """
    return any(not call.args for call in calls) and any(call.args for call in calls)


def replica_report(error: BaseException) -> str:
    """The text that may name a failing replica: the message and any notes.

    ``torch.nn.DataParallel`` rebuilds a replica's exception with a message
    starting "Caught ValueError in replica 3 on device 0."; the reference
    keeps the original message and adds a note "Raised in replica 3 ...".
    """
    return "\n".join([str(error), *getattr(error, "__notes__", [])])


def names_replica(error: BaseException, replica: int) -> bool:
    """Whether the error's message or notes name ``replica`` as the failing one."""
    return re.search(rf"\breplica {replica}\b", replica_report(error)) is not None
