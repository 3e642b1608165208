"""harness.report.outliers: a GPU far below its identical peers, even inside its tolerance."""

import statistics

from harness.gpus import Gpu
from harness.report.__main__ import main
from harness.report.model import load_report
from harness.report.outliers import Outlier, fleet_outliers, group_outliers
from tests.report_data import H100, H200, host, write_fleet


def outliers_of(tmp_path, **options):
    return fleet_outliers(load_report(write_fleet(tmp_path, **options)))


def test_a_slow_gpu_among_eight_nodes_is_flagged_though_it_passes(tmp_path):
    found = outliers_of(tmp_path, nodes=8, gpus=8, slow={("gpu-node05", 6): 0.92})
    assert found
    assert {o.node for o in found} == {"gpu-node05"}
    own = {(o.check.rsplit("::", 1)[1], o.figure) for o in found if o.check.endswith("[cuda:6]")}
    assert own == {
        ("test_copy_within_a_gpu[cuda:6]", "d2d_copy_bandwidth"),
        ("test_pinned_host_to_gpu[cuda:6]", "h2d_pinned_bandwidth"),
        ("test_bf16_matmul[cuda:6]", "bf16_matmul_tflops"),
    }
    pairs = {o.check.rsplit("[", 1)[1] for o in found if "test_peer_to_peer" in o.check}
    assert pairs <= {f"cuda:{a}-cuda:{b}]" for a in range(8) for b in range(8) if 6 in (a, b)}
    assert len(pairs) >= 10  # most of the 14 links of GPU 6, each direction
    copy = next(o for o in found if o.figure == "d2d_copy_bandwidth")
    assert copy.verdict == "pass"
    assert copy.gpu_model == H100
    assert copy.runs == 8
    assert -0.10 < copy.deviation < -0.06
    assert "below the median" in copy.line
    assert "its own verdict: pass" in copy.line


def test_a_uniform_fleet_has_no_outliers(tmp_path):
    assert outliers_of(tmp_path, nodes=8, gpus=4, seed=3) == []


def test_a_faster_gpu_is_not_an_outlier(tmp_path):
    assert outliers_of(tmp_path, nodes=8, gpus=2, slow={("gpu-node02", 1): 1.12}) == []


def test_with_identical_figures_a_small_difference_is_not_flagged_a_large_one_is(tmp_path):
    # noise=0: MAD is 0, so the minimum relative deviation alone decides
    small = outliers_of(tmp_path / "a", nodes=6, gpus=1, noise=0, slow={("gpu-node03", 0): 0.97})
    assert small == []
    large = outliers_of(tmp_path / "b", nodes=6, gpus=1, noise=0, slow={("gpu-node03", 0): 0.9})
    assert {(o.node, o.figure, o.sigma) for o in large} == {
        ("gpu-node03", figure, 0.0)
        for figure in ("d2d_copy_bandwidth", "h2d_pinned_bandwidth", "bf16_matmul_tflops")
    }


def test_too_few_nodes_are_not_compared(tmp_path):
    assert outliers_of(tmp_path, nodes=4, gpus=1, slow={("gpu-node02", 0): 0.5}) == []


def test_gpu_models_are_compared_only_with_their_own_kind(tmp_path):
    models = {host(i): H200 for i in range(6)}  # 6 H200s (d2d 4200 GB/s) and 6 H100s (2930)
    report = load_report(write_fleet(tmp_path, nodes=12, gpus=1, model=models))
    assert fleet_outliers(report) == []
    copies = [
        f.value for _, c in report.cases() for f in c.figures if f.name == "d2d_copy_bandwidth"
    ]
    low = statistics.median(copies) * 0.9
    assert sum(value < low for value in copies) == 6  # one pool: every H100 would be "slow"
    slow = write_fleet(tmp_path / "slow", nodes=12, gpus=1, model=models, slow={(host(2), 0): 0.9})
    found = fleet_outliers(load_report(slow))
    assert {(o.node, o.gpu_model) for o in found} == {(host(2), H200)}


def test_the_command_lists_outliers_and_exits_1(tmp_path, capsys):
    paths = write_fleet(tmp_path, nodes=6, gpus=1, slow={("gpu-node04", 0): 0.9})
    assert main(["outliers", *map(str, paths)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "3 fleet outlier(s) among 6 runs"
    headline, details = lines[0], lines[1:-1]
    assert headline.startswith("gpu-node04: GPU 0 (cuda:0, NVIDIA H100 80GB HBM3, GPU-")
    assert "is in 3 of 3 outlying figures (" in headline
    assert len(details) == 3
    assert all(line.startswith("  gpu-node04: suites.hardware.") for line in details)


def test_the_command_exits_0_on_a_healthy_fleet_and_2_on_a_bad_file(tmp_path, capsys):
    paths = write_fleet(tmp_path, nodes=6, gpus=1)
    assert main(["outliers", *map(str, paths)]) == 0
    assert capsys.readouterr().out == "no fleet outliers among 6 runs\n"
    assert main(["outliers", str(tmp_path / "none.xml")]) == 2
    assert capsys.readouterr().err.endswith("none.xml: no such file\n")


def test_counters_and_amounts_are_not_fleet_compared(tmp_path):
    # Node 2's ECC counter (median 0) fails its own check; it is not an outlier as well.
    files = write_fleet(tmp_path, nodes=8, gpus=2, fail={2: "ecc"})
    report = load_report(files)
    assert any(f.unit == "" for _, case in report.cases() for f in case.figures)
    assert [o for o in fleet_outliers(report) if o.unit in ("", "MiB", "samples")] == []


# Grouping: one verdict per node, naming the GPU -----------------------------------------------


def gpu(index: int) -> Gpu:
    return Gpu(f"GPU-{index:04d}", H100, f"00000000:{index:02X}:00.0", index, index)


def outlier(
    node: str,
    check: str,
    figure: str = "p2p_bandwidth",
    deviation: float = -0.1,
    gpus: tuple[int, ...] = (),
):
    """An outlier of ``deviation`` from a median of 100 GB/s, belonging to GPUs ``gpus``."""
    value = 100 * (1 + deviation)
    owners = tuple(gpu(index) for index in gpus)
    return Outlier(node, check, figure, "GB/s", value, 100.0, 1.0, 8, H100, None, owners)


def test_an_outliers_gpus_are_the_uuids_its_figure_names(tmp_path):
    found = outliers_of(tmp_path, nodes=6, gpus=8, slow={("gpu-node03", 5): 0.9})
    copy = next(o for o in found if o.figure == "d2d_copy_bandwidth")
    assert copy.gpus == ("GPU-7c1e4b20-3f5a-4d8e-0200-0a9d2e5f8305",)
    assert copy.owners[0].label == (
        "GPU 5 (cuda:5, NVIDIA H100 80GB HBM3, GPU-7c1e4b20-3f5a-4d8e-0200-0a9d2e5f8305, "
        "00000000:AB:00.0)"
    )
    pair = next(o for o in found if o.figure == "p2p_bandwidth" and o.check.endswith("-cuda:5]"))
    assert [g.nvml_index for g in pair.owners][1] == 5


def test_a_slow_gpu_in_pairs_of_both_directions_is_named_once(tmp_path):
    found = outliers_of(tmp_path, nodes=16, gpus=8, seed=2, slow={(host(5), 3): 0.9})
    [group] = group_outliers(found)
    assert group.node == host(5)
    assert [suspect.short_label for suspect in group.suspects] == ["GPU 3"]
    suspect = group.suspects[0]
    assert len(suspect.outliers) == len(found) == 17
    pairs = {tuple(g.nvml_index for g in o.owners) for o in suspect.outliers if len(o.gpus) == 2}
    assert {(3, 1), (1, 3)} <= pairs
    assert len(pairs) == 14  # every link of GPU 3, each direction
    assert suspect.label.startswith("GPU 3 (cuda:3, NVIDIA H100 80GB HBM3, GPU-7c1e4b20-")
    assert suspect.label.endswith(", 00000000:5D:00.0)")
    assert group.others == ()
    assert group.headline == (
        f"{host(5)}: {suspect.label} is in 17 of 17 outlying figures (h2d_pinned_bandwidth "
        "-11.1%, d2d_copy_bandwidth -10.1%, bf16_matmul_tflops -9.4%, p2p_bandwidth in 14 pairs "
        "-7.5% to -12.6%)"
    )


def test_two_slow_gpus_on_one_node_are_both_named(tmp_path):
    slow = {(host(2), 3): 0.9, (host(2), 5): 0.9}
    found = outliers_of(tmp_path, nodes=10, gpus=8, slow=slow)
    [group] = group_outliers(found)
    assert [(s.short_label, len(s.outliers)) for s in group.suspects] == [
        ("GPU 3", 17),
        ("GPU 5", 17),
    ]
    assert len(found) == 32  # 2 x 17, less the two links between them, counted once
    assert group.headline.startswith(f"{host(2)}: GPU 3 and GPU 5 are in 32 of 32 outlying")
    assert "; GPU 5 (cuda:5, NVIDIA H100 80GB HBM3, GPU-" in group.headline


def test_outliers_without_a_gpu_or_with_a_lone_pair_stay_listed_as_they_are():
    found = [
        outlier("n1", "m::test_allreduce_bus_bandwidth", "allreduce_busbw", -0.12),
        outlier("n1", "m::test_health", "gpu3.clock_mhz_per_s", -0.1, gpus=(3,)),
        outlier("n1", "m::test_peer_to_peer[cuda:1-cuda:4]", deviation=-0.06, gpus=(1, 4)),
        outlier("n2", "m::test_allreduce_bus_bandwidth", "allreduce_busbw", -0.08),
    ]
    first, second = group_outliers(found)
    # GPU 3 is the only GPU of its figure; the pair cannot say which end is slow
    assert [suspect.gpu for suspect in first.suspects] == ["GPU-0003"]
    assert first.others == (found[0], found[2])
    assert first.headline == (
        f"n1: {gpu(3).label} is in 1 of 3 outlying figures (gpu3.clock_mhz_per_s -10.0%); 2 "
        "tied to no one GPU (allreduce_busbw -12.0%, p2p_bandwidth -6.0% (GPU 1-GPU 4))"
    )
    assert (second.suspects, second.others) == ((), (found[3],))
    assert second.headline == "n2: 1 outlying figure, none tied to one GPU (allreduce_busbw -8.0%)"


def test_a_gpu_in_two_pairs_is_named_and_the_pair_without_it_is_not():
    found = [
        outlier("n1", "m::test_peer_to_peer[cuda:0-cuda:2]", deviation=-0.09, gpus=(0, 2)),
        outlier("n1", "m::test_peer_to_peer[cuda:2-cuda:0]", deviation=-0.07, gpus=(2, 0)),
        outlier("n1", "m::test_peer_to_peer[cuda:5-cuda:6]", deviation=-0.06, gpus=(5, 6)),
    ]
    [group] = group_outliers(found)
    # GPU 0 and GPU 2 tie; the lower index is named, and explains both pairs
    assert [suspect.short_label for suspect in group.suspects] == ["GPU 0"]
    assert group.suspects[0].description == "p2p_bandwidth in 2 pairs -7.0% to -9.0%"
    assert group.others == (found[2],)


def test_several_nodes_and_their_ranks_are_grouped_per_node_worst_first(tmp_path):
    slow = {(host(1), 0): 0.85, (host(6), 1): 0.92}
    found = outliers_of(tmp_path, nodes=8, gpus=2, ranks=1, slow=slow)
    groups = group_outliers(found)
    assert [(g.node, [s.short_label for s in g.suspects]) for g in groups] == [
        (host(1), ["GPU 0"]),
        (host(6), ["GPU 1"]),
    ]
    assert sum(len(g.outliers) for g in groups) == len(found)
    ranked = [
        outlier(f"{host(3)}/rank{r}", f"m::test_x[cuda:{r}]", "x", -0.1, gpus=(r,)) for r in (0, 1)
    ]
    [group] = group_outliers(ranked)
    assert group.node == host(3)
    assert [suspect.short_label for suspect in group.suspects] == ["GPU 0", "GPU 1"]
