"""The distributed runner's pure parts: rank layout, plain data, verdicts, torchrun's names."""

import dataclasses
import enum
from pathlib import Path

import pytest
import torch

from harness.devices import parse_devices
from harness.rankpool import stacks, torchrun
from harness.rankpool.env import DistEnv
from harness.rankpool.layout import plan_ranks
from harness.rankpool.protocol import (
    DIED,
    FAILED,
    HUNG,
    PASSED,
    SKIPPED,
    XFAILED,
    NotPlainData,
    RankResult,
    ensure_plain,
)
from harness.rankpool.verdict import judge

# --- layout ----------------------------------------------------------------------------


def cuda(spec: str, visible: int = 4):
    return parse_devices(spec, cuda_count=visible)


def test_cpu_ranks_use_gloo_on_the_cpu():
    layout = plan_ranks(parse_devices("cpu:4"), 3)
    assert layout.backend == "gloo"
    assert layout.devices == ("cpu", "cpu", "cpu")
    assert plan_ranks(None, 2).devices == ("cpu", "cpu")


@pytest.mark.parametrize(
    ("spec", "world_size", "backend", "devices"),
    [
        ("cuda", 2, "nccl", ("cuda:0", "cuda:1")),
        ("cuda:1,3", 2, "nccl", ("cuda:1", "cuda:3")),
        ("cuda:0,0,1", 2, "nccl", ("cuda:0", "cuda:1")),  # distinct GPUs first
        ("cuda:2", 1, "nccl", ("cuda:2",)),
        ("cuda:0,0", 2, "gloo", ("cuda:0", "cuda:0")),  # NCCL refuses two ranks on one GPU
        ("cuda:0,1", 3, "gloo", ("cuda:0", "cuda:1", "cuda:0")),  # shared round-robin
    ],
)
def test_cuda_ranks_get_nccl_on_their_own_gpu_else_gloo(spec, world_size, backend, devices):
    layout = plan_ranks(cuda(spec), world_size, nccl_available=True)
    assert (layout.backend, layout.devices) == (backend, devices)


def test_cuda_without_nccl_uses_gloo():
    layout = plan_ranks(cuda("cuda:0,1"), 2, nccl_available=False)
    assert (layout.backend, layout.devices) == ("gloo", ("cuda:0", "cuda:1"))


def test_world_size_below_one_is_refused():
    with pytest.raises(ValueError, match="world_size must be at least 1"):
        plan_ranks(None, 0)


# --- plain data ------------------------------------------------------------------------


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]
    dtype: torch.dtype


@pytest.mark.parametrize(
    "value",
    [
        None,
        3,
        2.5,
        "text",
        b"bytes",
        torch.float64,
        torch.device("cuda", 1),
        torch.Size([2, 3]),
        Color.RED,
        Path("/tmp/x"),
        Config((1, 2), torch.bfloat16),
        parse_devices("cpu:2"),
        {"a": [1, (2, 3.0)], 4: {5}},
    ],
)
def test_plain_data_may_cross(value):
    ensure_plain("argument 'x'", value)


@pytest.mark.parametrize(
    ("value", "where", "kind"),
    [
        (torch.ones(2), "argument 'x'", "torch.Tensor"),
        ({"model": [1, torch.nn.Linear(1, 1)]}, "argument 'x'['model'][1]", "Linear"),
        (lambda: 0, "argument 'x'", "function"),
        ({object(): 1}, "argument 'x' (a key)", "object"),
    ],
)
def test_other_data_is_refused_naming_where_it_is(value, where, kind):
    with pytest.raises(NotPlainData) as raised:
        ensure_plain("argument 'x'", value)
    message = str(raised.value)
    assert message.startswith(f"{where} is a ")
    assert kind in message.split(",")[0]
    assert "not plain data" in message


def test_recursive_containers_are_checked_once():
    loop: list = [1]
    loop.append(loop)
    ensure_plain("argument 'x'", loop)


# --- verdicts --------------------------------------------------------------------------


def result(rank, outcome, **fields):
    return RankResult(rank=rank, outcome=outcome, pid=100 + rank, **fields)


def test_all_passed_is_a_pass():
    assert judge([result(0, PASSED), result(1, PASSED)]).outcome == PASSED


def test_skips_are_a_skip_with_the_reason_prefixed_by_the_ranks():
    verdict = judge([result(0, SKIPPED, message="no GPU"), result(1, SKIPPED, message="no GPU")])
    assert (verdict.outcome, verdict.message) == (SKIPPED, "ranks 0, 1: no GPU")
    verdict = judge([result(0, PASSED), result(1, SKIPPED, message="odd rank")])
    assert (verdict.outcome, verdict.message) == (SKIPPED, "rank 1: odd rank")


def test_xfail_wins_over_skip_and_failure_over_both():
    xfail = result(0, XFAILED, message="known")
    skip = result(1, SKIPPED, message="why")
    assert judge([xfail, skip]).outcome == XFAILED
    assert judge([xfail, skip, result(2, FAILED, message="E")]).outcome == FAILED


def test_failure_message_names_each_bad_rank_with_its_details():
    results = [
        result(0, PASSED),
        result(
            1, FAILED, message="AssertionError: x", traceback="Traceback ...\nAssertionError: x"
        ),
        result(2, HUNG, message="did not finish within 3 s", stack='  File "t.py", line 9 in f'),
        result(3, DIED, message="killed by SIGSEGV", exitcode=-11, output="Fatal Python error"),
        result(4, HUNG, message="did not finish within 3 s", stack="..."),
    ]
    verdict = judge(results)
    assert verdict.outcome == FAILED
    lines = verdict.message.splitlines()
    assert lines[0] == (
        "5-rank test: rank 1 failed: AssertionError: x; ranks 2, 4 did not finish within 3 s; "
        "rank 3 died: killed by SIGSEGV"
    )
    assert lines[1] == "rank 0 passed"
    assert "==== rank 1 (pid 101): failed: AssertionError: x ====" in lines
    assert "Traceback ..." in lines
    assert "==== rank 2 (pid 102): did not finish within 3 s ====" in lines
    assert '  File "t.py", line 9 in f' in lines
    assert "==== rank 3 (pid 103): died: killed by SIGSEGV ====" in lines
    assert "Fatal Python error" in lines


# --- stacks ----------------------------------------------------------------------------

DUMP = """\
Thread 0x00007f01 (most recent call first):
  File "/x/harness/rankpool/worker.py", line 200 in _watch_parent
  File "/usr/lib/python3.11/threading.py", line 982 in run

Current thread 0x00007f02 (most recent call first):
  File "/x/test_a.py", line 7 in helper
  File "/x/test_a.py", line 12 in test_a
  File "/x/harness/rankpool/worker.py", line 81 in run_task
  File "<string>", line 1 in <module>
"""


def test_reported_stacks_leave_out_the_ranks_own_machinery():
    assert stacks.without_machinery(DUMP) == (
        "Current thread 0x00007f02 (most recent call first):\n"
        '  File "/x/test_a.py", line 7 in helper\n'
        '  File "/x/test_a.py", line 12 in test_a'
    )


# --- torchrun --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("reports/junit.xml", "reports/junit-node1-rank3.xml"),
        ("junit", "junit-node1-rank3.xml"),
        ("/abs/dir/run.v2.xml", "/abs/dir/run.v2-node1-rank3.xml"),
    ],
)
def test_each_rank_writes_its_own_junit_file(path, expected):
    assert torchrun.rank_junit_path(path, "node1", 3) == expected


def test_torchrun_world_is_read_from_its_variables():
    assert not torchrun.active({"RANK": "0"})
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert torchrun.active(env)
    assert torchrun.world_from_env(env) == torchrun.TorchrunWorld(3, 4, 1, 2)
    assert torchrun.world_from_env({"RANK": "0", "WORLD_SIZE": "1"}).local_world_size == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is outside WORLD_SIZE=2"),
        (
            {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"},
            "LOCAL_RANK=2 is outside LOCAL_WORLD_SIZE=2",
        ),
    ],
)
def test_malformed_torchrun_variables_are_one_line(env, message):
    with pytest.raises(torchrun.TorchrunEnvError, match=message):
        torchrun.world_from_env(env)


# --- DistEnv.ddp -----------------------------------------------------------------------


def test_ddp_moves_the_module_and_calls_the_factory_like_torch_ddp(monkeypatch):
    calls = []

    def factory(module, **kwargs):
        calls.append((module, kwargs))
        return module

    monkeypatch.setattr("harness.rankpool.env.resolve_ddp_factory", lambda spec: factory)
    env = DistEnv(rank=0, world_size=2, device=torch.device("cpu"), backend="gloo")
    module = torch.nn.Linear(2, 2).double()
    assert env.ddp(module, find_unused_parameters=True) is module
    assert calls == [(module, {"find_unused_parameters": True, "device_ids": None})]
