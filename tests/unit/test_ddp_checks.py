"""The DDP suites' machinery that needs no process group: recipes, shards, expectations."""

import pytest
import torch

from harness.ddp_checks.collectives import (
    LARGE_PRIME,
    contribution,
    exchange_values,
    expected_reduction,
    product_values,
    rank_values,
    reduce_scatter_size,
    split_size,
    unsupported,
)
from harness.ddp_checks.data import global_batch, mean_loss, shard_rows
from harness.ddp_checks.modules import randomise_state
from harness.models import ZOO

WORLDS = [2, 3, 4, 8]


@pytest.mark.parametrize("world", WORLDS)
def test_rank_values_are_nonzero_and_distinct_per_rank(world):
    values = torch.stack([rank_values(r, 13, torch.int64) for r in range(world)])
    assert (values != 0).all()
    for i in range(13):
        assert len(set(values[:, i].tolist())) == world, f"element {i} repeats across ranks"


@pytest.mark.parametrize("world", WORLDS)
def test_max_and_min_come_from_different_ranks(world):
    values = torch.stack([rank_values(r, 13, torch.int64) for r in range(world)])
    assert set(values.argmax(0).tolist()) == {0, world - 1}
    assert set(values.argmin(0).tolist()) == {0, world - 1}


@pytest.mark.parametrize("world", [2, 4, 8, 16, 64, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_every_partial_sum_of_contributions_is_exact(world, dtype):
    """So a backend's summation order cannot matter: each partial sum fits the dtype."""
    values = torch.stack([contribution("SUM", r, 13, dtype, world) for r in range(world)])
    wide = values.double()
    assert torch.equal(wide.abs().sum(0).to(dtype).double(), wide.abs().sum(0))
    assert (values != 0).all()
    if world <= 64:
        assert not torch.equal(values[0], values[1]), "neighbouring ranks hold the same values"


@pytest.mark.parametrize("world", [2, 8, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_products_are_exact_powers_of_two(world, dtype):
    exact = expected_reduction("PRODUCT", world, 64, torch.int64).double()
    assert torch.equal(expected_reduction("PRODUCT", world, 64, dtype).double(), exact)
    assert torch.equal(exact.abs(), 2 ** exact.abs().log2().round())
    assert (product_values(0, 64, torch.int64) != product_values(1, 64, torch.int64)).any()


def test_expected_reductions():
    a, b = rank_values(0, 5, torch.float64), rank_values(1, 5, torch.float64)
    torch.testing.assert_close(expected_reduction("SUM", 2, 5, torch.float64), a + b)
    torch.testing.assert_close(expected_reduction("AVG", 2, 5, torch.float64), (a + b) / 2)
    torch.testing.assert_close(expected_reduction("MAX", 2, 5, torch.float64), torch.maximum(a, b))
    torch.testing.assert_close(expected_reduction("MIN", 2, 5, torch.float64), torch.minimum(a, b))


@pytest.mark.parametrize("world", WORLDS)
def test_uneven_splits_are_uneven_and_exchanged_values_distinct(world):
    sizes = {(s, d): split_size(s, d) for s in range(world) for d in range(world)}
    assert len(set(sizes.values())) > 1
    assert min(sizes.values()) >= 1
    assert len({reduce_scatter_size(r) for r in range(world)}) > 1
    sent = [exchange_values(s, 0, torch.int64).tolist() for s in range(world)]
    assert len({tuple(v) for v in sent}) == world


def test_large_length_is_prime_and_no_world_size_divides_the_small_ones():
    assert all(LARGE_PRIME % k for k in range(2, int(LARGE_PRIME**0.5) + 1))
    assert all(13 % w for w in range(2, 13))


def test_unsupported_combinations_have_reasons():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert unsupported("all_reduce", "gloo", cpu, torch.float32, "SUM") is None
    assert unsupported("all_reduce", "nccl", cuda, torch.int64, "AVG")
    assert unsupported("all_to_all_uneven", "gloo", cpu, torch.float32)
    assert unsupported("all_to_all_uneven", "nccl", cuda, torch.float32) is None
    assert unsupported("reduce_scatter", "gloo", cuda, torch.float32)
    assert unsupported("all_gather", "gloo", cuda, torch.float32) is None
    assert unsupported("broadcast", "gloo", cuda, torch.float32) is None


def test_shards_partition_the_batch_in_rank_order():
    args, kwargs = global_batch(ZOO["transformer"], 3, torch.float64, torch.device("cpu"), seed=1)
    shards = [shard_rows((args, kwargs), r, 3) for r in range(3)]
    torch.testing.assert_close(torch.cat([s[0][0] for s in shards]), args[0])
    torch.testing.assert_close(torch.cat([s[1]["mask"] for s in shards]), kwargs["mask"])
    with pytest.raises(ValueError, match="equal shards"):
        shard_rows(torch.zeros(7, 2), 0, 2)


def test_mean_loss_of_equal_shards_averages_to_the_full_batch_loss():
    x = torch.randn(6, 4, dtype=torch.float64)
    shards = [mean_loss(shard_rows(x, r, 3)) for r in range(3)]
    torch.testing.assert_close(sum(shards) / 3, mean_loss(x))


def test_randomise_state_makes_every_tensor_seed_dependent():
    a = randomise_state(ZOO["cnn_bn"].make(torch.float64, torch.device("cpu")), seed=1)
    b = randomise_state(ZOO["cnn_bn"].make(torch.float64, torch.device("cpu")), seed=2)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert all(not torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert (a.bn.running_var > 0).all()
