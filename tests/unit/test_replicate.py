"""replicate of the reference DataParallel, on CPU virtual devices."""

import copy
import functools
import threading

import pytest
import torch
from torch import nn

from harness.parallel import replicate

CPU = torch.device("cpu")


def devices(n: int) -> list[torch.device]:
    return [CPU] * n


def attribute(module: nn.Module, dotted: str) -> torch.Tensor:
    return functools.reduce(getattr, dotted.split("."), module)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 4),
        nn.ReLU(),
        nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2)),
    ).double()


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Embedding(5, 4)
        self.dec = nn.Linear(4, 5, bias=False)
        self.dec.weight = self.enc.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(idx))


class WithNones(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2, bias=False)
        self.register_buffer("nothing", None)
        self.register_buffer("offset", torch.ones(2))
        self.register_module("absent", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.offset


def test_replicas_are_distinct_modules_of_the_same_types():
    net = small_net()
    replicas = replicate(net, devices(3))
    assert len(replicas) == 3
    originals = list(net.modules())
    seen = {id(m) for m in originals}
    for replica in replicas:
        mods = list(replica.modules())
        assert [type(m) for m in mods] == [type(m) for m in originals]
        assert [name for name, _ in replica.named_modules()] == [
            name for name, _ in net.named_modules()
        ]
        ids = {id(m) for m in mods}
        assert not ids & seen, "a replica shares a module object with the original or another"
        seen |= ids


def test_replicate_on_no_devices_gives_no_replicas():
    assert replicate(small_net(), []) == []


def test_replicas_compute_what_the_original_computes():
    net = small_net().eval()
    x = torch.randn(5, 3, dtype=torch.float64)
    expected = net(x)
    for replica in replicate(net, devices(3)):
        assert torch.equal(replica(x), expected)


def test_first_replica_views_the_original_parameters_without_copying():
    net = small_net()
    first = replicate(net, devices(2))[0]
    for name, original in net.named_parameters():
        viewed = attribute(first, name)
        assert viewed.data_ptr() == original.data_ptr(), name
        # Differentiable, through the one node that sums every replica's gradient.
        assert viewed.grad_fn is not None, name
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert torch.equal(first[0].weight, net[0].weight)


def test_without_grad_the_first_replica_holds_the_original_storage():
    net = small_net()
    with torch.no_grad():
        first = replicate(net, devices(2), detach=True)[0]
    assert first[0].weight.data_ptr() == net[0].weight.data_ptr()


def _forward_in_thread(replica: nn.Module, x: torch.Tensor, earlier_nodes: int) -> torch.Tensor:
    """``replica(x)`` in a fresh thread that first builds ``earlier_nodes`` autograd nodes.

    Autograd numbers nodes per thread, and its engine runs later-numbered nodes first: a
    replica thread's history decides when its backward runs, as replica threads that live
    across forwards have different histories.
    """
    result = {}

    def run() -> None:
        t = torch.zeros(1, requires_grad=True)
        for _ in range(earlier_nodes):
            t = t * 1.0
        result["out"] = replica(x).sum()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result["out"]


def test_replica_gradients_are_summed_in_replica_order_whatever_ran_first():
    """One node per parameter sums the replicas' gradients: running the replicas' backward in
    another order gives bitwise the same sum (left to autograd, the sum follows the order)."""
    lin = nn.Linear(1, 1, bias=False).double()
    xs = [torch.tensor([[v]], dtype=torch.float64) for v in (1e16, 1.0, -1e16, 1.0)]
    grads = []
    for histories in ([0, 10, 20, 30], [30, 20, 10, 0], [10, 30, 0, 20]):
        lin.weight.grad = None
        replicas = replicate(lin, devices(4))
        outs = [_forward_in_thread(r, x, n) for r, x, n in zip(replicas, xs, histories)]
        sum(outs).backward()
        grads.append(lin.weight.grad.item())
    # In replica order: ((1e16 + 1) - 1e16) + 1 = 1 (1e16 + 1 rounds to 1e16).
    assert grads == [1.0, 1.0, 1.0]


def test_other_replicas_have_copies_with_their_own_storage():
    net = small_net()
    replicas = replicate(net, devices(3))
    for replica in replicas[1:]:
        for name, original in net.named_parameters():
            copied = attribute(replica, name)
            assert copied is not original, name
            assert copied.untyped_storage().data_ptr() != original.untyped_storage().data_ptr()
            assert torch.equal(copied, original)
            # A differentiable copy, not a new leaf.
            assert copied.grad_fn is not None
    assert replicas[1][0].weight.data_ptr() != replicas[2][0].weight.data_ptr()
    # Changing the original afterwards does not reach the copies.
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert not torch.equal(replicas[1][0].weight, net[0].weight)


def test_gradients_from_all_replicas_sum_into_the_original():
    net = small_net()
    reference = copy.deepcopy(net)
    x = torch.randn(9, 3, dtype=torch.float64)
    chunks = x.chunk(3)
    replicas = replicate(net, devices(3))
    # BatchNorm in training mode normalises per chunk, so the reference is the
    # per-chunk loss too; the sum over chunks is what a replica gradient sum gives.
    loss = sum((r(c) ** 2).sum() for r, c in zip(replicas, chunks, strict=True))
    loss.backward()
    expected_loss = sum((reference(c) ** 2).sum() for c in chunks)
    expected_loss.backward()
    for (name, p), q in zip(net.named_parameters(), reference.parameters(), strict=True):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14, msg=name)
    # The copies are not leaves: their gradient only passes through them.
    assert not replicas[1][0].weight.is_leaf


def test_gradient_sum_counts_each_replica_once():
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    replicas = replicate(lin, devices(4))
    xs = [torch.tensor([[float(i + 1)]]) for i in range(4)]
    sum(r(x).sum() for r, x in zip(replicas, xs)).backward()
    assert lin.weight.grad.item() == 1 + 2 + 3 + 4


def test_first_replica_shares_buffers_others_own_copies():
    bn = nn.BatchNorm1d(2)
    first, second = replicate(bn, devices(2))
    assert first.running_mean is bn.running_mean
    assert second.running_mean is not bn.running_mean
    assert second.running_mean.data_ptr() != bn.running_mean.data_ptr()

    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    second(x)  # in-place update of the second replica's running stats
    assert torch.equal(bn.running_mean, torch.zeros(2))
    assert bn.num_batches_tracked.item() == 0
    assert torch.allclose(second.running_mean, torch.tensor([0.2, 0.4]))

    first(x)  # the first replica updates the original's buffers in place
    assert torch.allclose(bn.running_mean, torch.tensor([0.2, 0.4]))
    assert bn.num_batches_tracked.item() == 1


def test_buffers_are_not_differentiable_copies():
    bn = nn.BatchNorm1d(2)
    for replica in replicate(bn, devices(3)):
        assert not replica.running_mean.requires_grad
        assert replica.running_mean.grad_fn is None


def test_buffer_that_requires_grad_passes_gradients_back():
    net = WithNones()
    net.offset.requires_grad_(True)
    replicas = replicate(net, devices(2))
    assert replicas[0].offset.data_ptr() == net.offset.data_ptr()
    assert replicas[1].offset.grad_fn is not None
    x = torch.randn(3, 2)
    sum(r(x).sum() for r in replicas).backward()
    assert torch.equal(net.offset.grad, torch.full((2,), 6.0))


def test_tied_weights_stay_tied_within_each_replica():
    net = Tied()
    reference = copy.deepcopy(net)
    replicas = replicate(net, devices(3))
    for replica in replicas:
        assert replica.dec.weight is replica.enc.weight
    assert replicas[1].enc.weight is not replicas[2].enc.weight
    assert replicas[1].enc.weight is not net.enc.weight

    idx = torch.tensor([[1, 2]])
    sum(r(idx).sum() for r in replicas).backward()
    (3 * reference(idx).sum()).backward()
    torch.testing.assert_close(net.enc.weight.grad, reference.enc.weight.grad)


def test_detach_gives_replicas_without_a_graph():
    net = small_net()
    replicas = replicate(net, devices(3), detach=True)
    x = torch.randn(4, 3, dtype=torch.float64)
    for replica in replicas:
        weight = replica[0].weight
        assert not weight.requires_grad
        assert weight.grad_fn is None
        assert torch.equal(weight, net[0].weight)
        out = replica(x)
        assert not out.requires_grad
    # The original keeps its parameters untouched.
    assert net[0].weight.requires_grad
    assert isinstance(net[0].weight, nn.Parameter)


def test_lstm_replicas_flat_weights_are_their_own_tensors():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, num_layers=2)
    original_flat = list(lstm._flat_weights)
    replicas = replicate(lstm, devices(3))
    for j, replica in enumerate(replicas):
        assert replica._flat_weights is not lstm._flat_weights
        for name, flat in zip(replica._flat_weights_names, replica._flat_weights, strict=True):
            assert flat is getattr(replica, name), (j, name)
            if j > 0:
                assert flat is not getattr(lstm, name), (j, name)
    # The original's cache still points at its own parameters.
    assert all(a is b for a, b in zip(lstm._flat_weights, original_flat, strict=True))

    x = torch.randn(5, 2, 3)
    expected, _ = lstm(x)
    out, _ = replicas[2](x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.sum().backward()
    assert lstm.weight_ih_l0.grad is not None
    assert lstm.weight_ih_l0.grad.abs().sum() > 0


def test_python_attributes_set_on_a_replica_do_not_reach_the_original():
    net = small_net()
    net.note = "original"
    replicas = replicate(net, devices(2))
    for i, replica in enumerate(replicas):
        replica.note = f"replica {i}"
        replica[0].extra = i
    assert net.note == "original"
    assert not hasattr(net[0], "extra")
    assert replicas[0].note == "replica 0"


def test_module_with_none_parameters_buffers_and_children():
    net = WithNones()
    for replica in replicate(net, devices(2)):
        assert replica.lin.bias is None
        assert replica.nothing is None
        assert replica.absent is None
        assert "absent" in replica._modules
        assert "nothing" in replica._buffers
        x = torch.randn(3, 2)
        assert torch.equal(replica(x), net(x))


@pytest.mark.parametrize("n", [2, 3])
def test_sparse_embedding_gradients_sum(n):
    emb = nn.Embedding(10, 3, sparse=True)
    replicas = replicate(emb, devices(n))
    indices = [torch.tensor([1, 2, 2]), torch.tensor([2, 5]), torch.tensor([9, 1])][:n]
    sum(r(i).sum() for r, i in zip(replicas, indices, strict=True)).backward()
    grad = emb.weight.grad
    assert grad.is_sparse
    counts = torch.bincount(torch.cat(indices), minlength=10).float()
    assert torch.equal(grad.to_dense(), counts[:, None].expand(10, 3))


def test_replicas_on_repeated_devices_are_independent_of_each_other():
    lin = nn.Linear(2, 2)
    first, second, third = replicate(lin, devices(3))
    with torch.no_grad():
        second.weight.zero_()  # an in-place change on one copy
    assert not torch.equal(third.weight, second.weight)
    assert torch.equal(third.weight, lin.weight)
    assert torch.equal(first.weight, lin.weight)
