"""The implementations under test, chosen by ``--dp-impl`` and ``--ddp-impl``.

Every such option takes the same forms: a built-in name, or ``MODULE:ATTR`` naming a
callable with the signature of the torch wrapper it stands in for. ``MODULE`` is
imported normally, so packages under the rootdir (``tests.mutants.dp``) resolve
once the rootdir is on ``sys.path``, which the plugin ensures.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from harness.devices import DeviceSet

DPFactory = Callable[..., nn.Module]
DDPFactory = Callable[..., nn.Module]


class ImplSpecError(ValueError):
    """An implementation spec that does not resolve to a callable; the message is one line."""


@dataclass(frozen=True)
class DPImpl:
    """A DataParallel implementation: ``factory(module, device_ids, output_device, dim)``."""

    name: str
    factory: DPFactory


@dataclass(frozen=True)
class DDPImpl:
    """A DistributedDataParallel implementation: ``factory(module, device_ids=..., **kwargs)``."""

    name: str
    factory: DDPFactory


def load_callable(spec: str, option: str) -> Callable:
    """Import ``MODULE:ATTR`` (ATTR may be dotted) and return the callable it names.

    ``option`` (e.g. ``--dp-impl``) prefixes error messages so the user sees what to fix.
    """
    target = import_attribute(spec, option, "reference, torch or MODULE:ATTR")
    if not callable(target):
        _, _, attr_path = spec.partition(":")
        raise ImplSpecError(
            f"{option} {spec!r}: {attr_path!r} is a {type(target).__name__}, not a callable"
        )
    return target


def import_attribute(spec: str, option: str, expected: str = "MODULE:ATTR") -> object:
    """Import ``MODULE:ATTR`` (ATTR may be dotted) and return what it names; ``ImplSpecError``
    (one line, prefixed by ``option``) when it cannot."""
    module_name, colon, attr_path = spec.partition(":")
    if not colon or not module_name or not attr_path:
        raise ImplSpecError(f"{option} {spec!r}: expected {expected}")
    try:
        target = importlib.import_module(module_name)
    except Exception as err:  # a user's module may fail in any way; report it in one line
        raise ImplSpecError(
            f"{option} {spec!r}: importing {module_name!r} failed: {type(err).__name__}: "
            + " ".join(str(err).split())
        ) from err
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ImplSpecError(
                f"{option} {spec!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return target


def resolve_dp_impl(spec: str, devices: DeviceSet) -> DPImpl:
    """Resolve ``--dp-impl``: ``reference``, ``torch`` (CUDA only) or ``MODULE:ATTR``."""
    if spec == "reference":
        # Imported here so the plugin loads even where the reference is absent or broken.
        from harness.parallel import DataParallel

        return DPImpl("reference", DataParallel)
    if spec == "torch":
        if devices.kind != "cuda":
            raise ImplSpecError(
                f"--dp-impl torch: torch.nn.DataParallel needs CUDA devices, but --devices "
                f"{devices.label} has none; use --devices cuda... or --dp-impl reference"
            )
        return DPImpl("torch", nn.DataParallel)
    return DPImpl(spec, load_callable(spec, "--dp-impl"))


def resolve_ddp_impl(spec: str) -> DDPImpl:
    """Resolve ``--ddp-impl``: ``reference``, ``torch`` or ``MODULE:ATTR``.

    ``torch`` is allowed on CPU devices too: torch's DDP runs on CPU tensors with gloo.
    Nothing here creates a process group or initialises CUDA.
    """
    if spec in ("reference", "torch"):
        import torch.distributed as dist

        if not dist.is_available():
            raise ImplSpecError(
                f"--ddp-impl {spec}: this torch build has no torch.distributed, which "
                "DistributedDataParallel needs"
            )
        if spec == "reference":
            # Imported here so the plugin loads even where the reference is absent or broken.
            from harness.parallel import DistributedDataParallel

            return DDPImpl("reference", DistributedDataParallel)
        from torch.nn.parallel import DistributedDataParallel

        return DDPImpl("torch", DistributedDataParallel)
    return DDPImpl(spec, load_callable(spec, "--ddp-impl"))


def ddp_factory(spec: str) -> DDPFactory:
    """The factory ``--ddp-impl spec`` names, for use inside a rank after the process group
    exists: ``factory(module, device_ids=[index] on CUDA else None, **kwargs)``, called like
    ``torch.nn.parallel.DistributedDataParallel``. Raises ``ImplSpecError`` (one line)."""
    return resolve_ddp_impl(spec).factory
