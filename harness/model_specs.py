"""The models a run checks: a zoo name or ``MODULE:ATTR`` resolved to a ``ModelSpec``, and what
the claims need to know of a model (its traits).

``model_spec(ref)`` takes the names the ``--model`` option and the rank processes pass around
(plain strings, so they cross to ranks): a zoo model's name (``mlp``) or ``MODULE:ATTR`` naming
a ``harness.models.ModelSpec`` or a zero-argument callable returning one. Every problem is a
``ModelSpecError`` of one line naming the reference.

``traits(spec)`` is a model's nature as the claims see it: the spec's flags where it sets them,
else found from a model built on the meta device (no memory, no values): BatchNorm layers make
it batch-dependent, ``nn.Embedding(sparse=True)`` gives sparse gradients, RNN layers make it
recurrent; dropout layers, and parameters shared by several modules (tied weights), are listed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from harness.impl import ImplSpecError, import_attribute
from harness.models import MEMORY_ZOO, ZOO, ModelSpec

DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


class ModelSpecError(ValueError):
    """A model reference that names no usable ``ModelSpec``; the message is one line."""


@functools.cache
def model_spec(ref: str, option: str = "--model") -> ModelSpec:
    """The ``ModelSpec`` ``ref`` names: a zoo model, or ``MODULE:ATTR``."""
    if ref in ZOO:
        return ZOO[ref]
    if ":" not in ref:
        raise ModelSpecError(
            f"{option} {ref!r}: expected MODULE:ATTR naming a harness.models.ModelSpec (or a "
            f"callable returning one), or a zoo model: {', '.join(ZOO)}"
        )
    try:
        target = import_attribute(ref, option)
    except ImplSpecError as err:
        raise ModelSpecError(str(err)) from None
    if not isinstance(target, ModelSpec) and callable(target):
        try:
            target = target()
        except Exception as err:  # the user's factory may fail in any way; say so in one line
            text = " ".join(str(err).split())
            raise ModelSpecError(
                f"{option} {ref!r}: calling it failed: {type(err).__name__}: {text}"
            ) from None
    if not isinstance(target, ModelSpec):
        raise ModelSpecError(
            f"{option} {ref!r}: gave a {type(target).__name__}, not a harness.models.ModelSpec"
        )
    return target


def memory_spec(ref: str) -> ModelSpec:
    """The largest-batch search's version of ``ref``: the realistic zoo's model of that name,
    else the user's own."""
    return MEMORY_ZOO[ref] if ref in MEMORY_ZOO else model_spec(ref)


@dataclass(frozen=True)
class Traits:
    batch_dependent: bool
    sparse_grads: bool
    recurrent: bool
    dropout: tuple[str, ...]  # the dropout layers, by module name
    tied: tuple[tuple[str, ...], ...]  # each group of names one parameter goes by


@functools.cache
def traits(spec: ModelSpec) -> Traits:
    """The spec's flags, else what a meta-device build of it shows; see the module's docstring."""
    with torch.device("meta"):
        model = spec.build()
    modules = dict(model.named_modules())
    found_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules.values())
    found_sparse = any(
        isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse for m in modules.values()
    )
    found_recurrent = any(isinstance(m, nn.RNNBase) for m in modules.values())
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return Traits(
        batch_dependent=_flag(spec.batch_dependent, found_batchnorm),
        sparse_grads=_flag(spec.sparse_grads, found_sparse),
        recurrent=_flag(spec.recurrent, found_recurrent),
        dropout=tuple(n for n, m in modules.items() if isinstance(m, DROPOUT) and m.p > 0),
        tied=tuple(tuple(group) for group in names.values() if len(group) > 1),
    )


def _flag(given: bool | None, found: bool) -> bool:
    return found if given is None else given
