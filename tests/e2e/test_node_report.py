"""The node under test in the header and the JUnit suite properties, with ``--fake-node``."""

import xml.etree.ElementTree as ET

from tests.pytest_run import REPO, run_pytest

SNAPSHOT = REPO / "harness" / "profiles" / "shipped" / "snapshots" / "h100-sxm-x8.json"


def test_fake_node_is_the_node_reported(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    xml = tmp_path / "junit.xml"
    done = run_pytest([str(tmp_path), "--fake-node", str(SNAPSHOT), "--junitxml", str(xml)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"node: fake-node {SNAPSHOT} of h100x8-example: 8x NVIDIA H100 80GB HBM3" in done.stdout
    root = ET.parse(xml).getroot()
    properties = {p.get("name"): p.get("value") for p in root.find("testsuite/properties")}
    assert properties["node.source"] == f"fake-node {SNAPSHOT}"
    assert properties["node.host"] == "h100x8-example"
    assert properties["node.gpu_count"] == "8"
    assert properties["node.gpu.0.uuid"].startswith("GPU-")
    # The machine that ran the tests is still the host.
    assert properties["host"] != "h100x8-example"
