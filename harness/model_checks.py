"""What can be known of a model on one device before data parallelism runs it, and the remedy to
print when it goes wrong: outputs that cannot be gathered, state kept in Python attributes,
randomness beyond dropout layers, and the dropout the equivalence claims switch off.

Each check returns what it found (empty when all is well) or a one-paragraph problem naming the
place (``output["past_key_values"]``, ``encoder.layer.0.cache``) and what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from harness.model_specs import DROPOUT

GATHERABLE = "tensors, None, and dicts, lists, tuples and namedtuples of them"
GATHER_REMEDY = (
    "return tensors only: a Hugging Face model returns a cache object unless built with "
    "use_cache=False (or called with use_cache=False); a dataclass output can be returned as "
    "a dict or a tuple"
)
STATE_REMEDY = (
    "under data parallelism a forward runs on replicas, shallow copies made for that forward, "
    "so writes to their Python attributes are lost; keep such state in a registered buffer "
    "updated in place (only the first replica's update survives), or return it"
)
RANDOM_REMEDY = (
    "outputs differ between two training-mode forwards of the same model on the same inputs, "
    "with dropout layers switched off: the forward draws random numbers elsewhere (functional "
    "dropout, such as Hugging Face attention_dropout or hidden_dropout_prob); build the model "
    "with those probabilities at 0 for the comparison"
)


def leaves(obj: Any, path: str = "output") -> Iterator[tuple[str, Any]]:
    """Every leaf of a (nested) output with where it sits: ``output["logits"]``, ``output[0]``,
    ``output.mean`` (a namedtuple's field)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, f"{path}[{key!r}]")
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):
        for field, value in zip(obj._fields, obj, strict=True):
            yield from leaves(value, f"{path}.{field}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from leaves(value, f"{path}[{i}]")
    else:
        yield path, obj


def gather_problem(output: Any) -> str | None:
    """Why DataParallel cannot gather ``output`` (a single-device forward's), or None."""
    found = [(path, leaf) for path, leaf in leaves(output) if not _gatherable(leaf)]
    if not found:
        return None
    where = "; ".join(f"{path} is a {type(leaf).__name__}" for path, leaf in found[:3])
    more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
    return (
        f"the model's outputs cannot be gathered from its replicas: {where}{more}. "
        f"DataParallel gathers {GATHERABLE}: {GATHER_REMEDY}"
    )


def _gatherable(leaf: Any) -> bool:
    return leaf is None or isinstance(leaf, torch.Tensor)


# Module attributes torch itself keeps or changes in a forward: not the model's state.
_TORCH_OWN = {"_parameters", "_buffers", "_modules", "training", "_flat_weights"}


def python_state(model: nn.Module) -> dict[str, Any]:
    """Every plain Python attribute of every submodule, by ``module.attribute`` name."""
    state = {}
    for name, module in model.named_modules():
        for key, value in vars(module).items():
            if key in _TORCH_OWN or key.startswith("_forward") or key.startswith("_backward"):
                continue
            state[f"{name}.{key}" if name else key] = value
    return state


def state_written(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The attributes a forward set, rebound or deleted (compared by identity)."""
    changed = [key for key in after if key not in before or after[key] is not before[key]]
    return sorted([*changed, *(key for key in before if key not in after)])


def state_problem(model: nn.Module, args: tuple, kwargs: dict) -> str | None:
    """Why the model's forward loses state under data parallelism, or None: a forward on one
    device that writes Python attributes of its modules."""
    before = python_state(model)
    model(*args, **kwargs)
    written = state_written(before, python_state(model))
    if not written:
        return None
    shown = ", ".join(written[:5]) + (f" (and {len(written) - 5} more)" if len(written) > 5 else "")
    return f"the forward writes the Python attributes {shown}: {STATE_REMEDY}"


def dropout_off(model: nn.Module) -> list[str]:
    """Set every dropout layer's probability to 0, so that training-mode forwards can be
    compared (random masks cannot be); the names of the layers changed."""
    changed = []
    for name, module in model.named_modules():
        if isinstance(module, DROPOUT) and module.p > 0:
            module.p = 0.0
            changed.append(name)
    return changed


def randomness_problem(first: Any, second: Any) -> str | None:
    """Why two training-mode forwards of one model on the same inputs differ, or None."""
    for (path, a), (_, b) in zip(leaves(first), leaves(second), strict=True):
        if isinstance(a, torch.Tensor) and not torch.equal(a, b):
            return f"{path}: {RANDOM_REMEDY}"
    return None
