"""Multi-node runs on torchrun: two agents on loopback as two nodes of two ranks each.

Each agent is a real ``torchrun`` with c10d rendezvous, as on a cluster; every rank
runs pytest on a DDP suite itself and writes its own JUnit file, named by host and
rank. The two agents share this machine's host name, so the four files differ by rank.
"""

import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from junitparser import JUnitXml

from tests.pytest_run import undocumented_properties

REPO = Path(__file__).resolve().parents[2]
SUITE = "suites/ddp/test_collectives.py"
NODES, RANKS_PER_NODE = 2, 2
TIMEOUT_S = 240


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def agent(node: int, port: int, junit: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "torch.distributed.run"),
        *("--nnodes", str(NODES), "--nproc-per-node", str(RANKS_PER_NODE)),
        *("--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"),
        *("--rdzv-id", f"harness-selftest-{port}"),
        # Both agents run here: say which one hosts the rendezvous store.
        *("--rdzv-conf", f"is_host={int(node == 0)}", "--max-restarts", "0"),
        *("-m", "pytest", "-p", "harness.plugin", "-p", "no:cacheprovider", "-q"),
        *(SUITE, "--devices", "cpu:2", "--junitxml", str(junit)),
    ]


@pytest.fixture(scope="module")
def junit_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    if not (REPO / SUITE).exists():
        pytest.fail(f"{SUITE} is missing: the multi-node test runs it")
    out = tmp_path_factory.mktemp("torchrun")
    port = free_loopback_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env |= {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    agents = [
        subprocess.Popen(
            agent(node, port, out / "junit.xml"),
            cwd=REPO,
            env=env,
            stdout=open(out / f"agent{node}.log", "w"),  # noqa: SIM115 (closed with the process)
            stderr=subprocess.STDOUT,
        )
        for node in range(NODES)
    ]
    codes = []
    try:
        for proc in agents:
            codes.append(proc.wait(timeout=TIMEOUT_S))
    finally:
        for proc in agents:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = "\n".join((out / f"agent{n}.log").read_text()[-3000:] for n in range(NODES))
    assert codes == [0] * NODES, f"torchrun agents exited with {codes}\n{logs}"
    host = socket.gethostname().split(".")[0]
    files = {rank: out / f"junit-{host}-rank{rank}.xml" for rank in range(NODES * RANKS_PER_NODE)}
    missing = [str(path) for path in files.values() if not path.exists()]
    assert not missing, f"no JUnit file from {missing}; found {sorted(os.listdir(out))}\n{logs}"
    return files


def test_every_rank_writes_its_own_junit_file(junit_files: dict[int, Path]) -> None:
    assert len(set(junit_files.values())) == NODES * RANKS_PER_NODE


def test_every_rank_ran_the_suite_and_passed(junit_files: dict[int, Path]) -> None:
    for rank, path in junit_files.items():
        suites = list(JUnitXml.fromfile(str(path)))
        tests = sum(suite.tests for suite in suites)
        bad = sum(suite.failures + suite.errors for suite in suites)
        skipped = sum(suite.skipped for suite in suites)
        assert tests > 0, f"rank {rank}: {path.name} holds no tests"
        assert bad == 0, f"rank {rank}: {bad} failures or errors in {path.name}"
        assert skipped < tests, f"rank {rank}: every test skipped in {path.name}"


def test_junit_files_name_rank_world_and_host(junit_files: dict[int, Path]) -> None:
    for rank, path in junit_files.items():
        assert undocumented_properties(path) == [], path
        suite = ET.parse(path).getroot().find("testsuite")
        props = {p.get("name"): p.get("value") for p in suite.iterfind("properties/property")}
        assert props.get("rank") == str(rank), f"{path.name}: rank property {props.get('rank')}"
        assert props.get("world_size") == str(NODES * RANKS_PER_NODE), path.name
        # Ranks are numbered node by node.
        assert props.get("local_rank") == str(rank % RANKS_PER_NODE), path.name
        assert props.get("host"), path.name
