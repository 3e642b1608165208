"""``--profile auto``: the shipped profile whose GPU model and count are the node's.

A profile matches when it expects as many GPUs as NVML lists and every GPU's NVML name matches
its ``gpu_model``; a node without GPUs matches a profile expecting none. Exactly one must
match: none, or several, is a ``ProfileError`` whose one line names the node's GPUs, where
they were read, and every shipped profile with what it expects. A node that lost a GPU matches
no profile of its model; the message says which profile expects one more, so the operator can
name it and see ``inventory.gpu_count`` fail in JUnit. On a real node NVML's count is first
checked against the PCI bus's (``harness.hardware.pci``), so that a node with most of its GPUs
lost is not taken for a smaller node.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from harness.profiles.model import Profile, ProfileError


@dataclass(frozen=True)
class NodeModels:
    """What auto-selection knows of a node: its GPUs' NVML names, and where they came from."""

    gpu_names: tuple[str, ...]
    source: str  # "NVML", "fake-node FILE", or why there is no NVML and no CUDA device
    pci_gpus: int | None = None  # NVIDIA GPUs on the PCI bus, where known (a real node)

    @property
    def summary(self) -> str:
        """``8x NVIDIA H100 80GB HBM3``, or ``no GPU``."""
        counts = Counter(self.gpu_names)
        return ", ".join(f"{n}x {name}" for name, n in counts.items()) or "no GPU"


def expects(profile: Profile) -> str:
    """``8x /H100 80GB HBM3/`` or ``no GPU``: what a profile matches."""
    inventory = profile.inventory
    if inventory.gpu_count == 0:
        return "no GPU"
    return f"{inventory.gpu_count}x /{inventory.gpu_model}/"


def matches(profile: Profile, node: NodeModels) -> bool:
    inventory = profile.inventory
    if inventory.gpu_count != len(node.gpu_names):
        return False
    return all(inventory.model_matches(name) for name in node.gpu_names)


def choose_profile(node: NodeModels, profiles: Sequence[Profile]) -> Profile:
    """The one profile of ``profiles`` that matches ``node``; ``ProfileError`` otherwise."""
    if node.pci_gpus is not None and node.pci_gpus > len(node.gpu_names):
        raise ProfileError(
            f"--profile auto: the PCI bus lists {node.pci_gpus} NVIDIA GPU(s) but "
            f"{node.source} {len(node.gpu_names)} ({node.summary}): a GPU may have fallen off "
            "the bus or failed to bind; pass --profile NAME to judge the node against its profile"
        )
    found = [profile for profile in profiles if matches(profile, node)]
    if len(found) == 1:
        return found[0]
    where = f"this node has {node.summary} ({node.source})"
    if found:
        names = ", ".join(profile.name for profile in found)
        raise ProfileError(
            f"--profile auto: {where}, which several shipped profiles match: {names}; "
            "pass one with --profile NAME"
        )
    hint = ""
    same_model = [
        p
        for p in profiles
        if node.gpu_names
        and p.inventory.gpu_count > len(node.gpu_names)
        and all(p.inventory.model_matches(name) for name in node.gpu_names)
    ]
    if same_model:
        wanted = ", ".join(f"{p.name} expects {p.inventory.gpu_count}" for p in same_model)
        hint = (
            f" ({wanted}: a GPU missing? --profile NAME judges the node against it, and "
            "inventory.gpu_count fails naming the count)"
        )
    shipped = ", ".join(f"{p.name} ({expects(p)})" for p in profiles) or "none"
    raise ProfileError(
        f"--profile auto: no shipped profile matches: {where}{hint}; shipped: {shipped}"
    )
