"""Every JUnit property a real run writes is one ``harness.properties`` documents: the
hardware and memory suites on a fake node under a profile and a reordering
``CUDA_VISIBLE_DEVICES``, and data-parallel and distributed tests. (The torchrun suite
properties are checked in test_torchrun.py.)"""

from tests.pytest_run import clean_env, junit_suite_properties, run_pytest, undocumented_properties

SELECTION = [
    "suites/hardware",
    "suites/memory",
    "suites/dp/test_gather.py",
    "suites/ddp/test_sync.py",
    "-k",
    "not test_world",
]


def test_every_property_a_run_writes_is_documented(tmp_path):
    junit = tmp_path / "junit.xml"
    done = run_pytest(
        [
            *SELECTION,
            "--fake-node",
            "h100-sxm-x8",
            "--profile",
            "auto",
            "--memory-limit",
            "1GiB",
            "--devices",
            "cpu:2",
            f"--junitxml={junit}",
        ],
        env={**clean_env(), "CUDA_VISIBLE_DEVICES": "3,1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert undocumented_properties(junit) == []
    suite = junit_suite_properties(junit)
    assert (suite["profile"], suite["profile.chosen_by"]) == ("h100-sxm-8x", "auto")
    assert suite["env.CUDA_VISIBLE_DEVICES"] == "3,1"
    assert (suite["node.gpu.3.cuda_index"], suite["node.gpu.1.cuda_index"]) == ("0", "1")
    assert suite["memory_limit"] == "1 GiB"
