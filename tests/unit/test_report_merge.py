"""harness.report.merge: one JUnit file from many nodes and ranks, as CI reporters need it."""

import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from harness.report.__main__ import main
from harness.report.model import load_report, read_suites
from tests.report_data import labels, write_fleet

# Jenkins' junit-10.xsd (the xunit2 schema pytest follows), as far as a merged file uses it.
XSD_ATTRIBUTES = {
    "testsuites": {"name", "time", "tests", "failures", "errors"},
    "testsuite": {"name", "tests", "failures", "errors", "group", "time", "skipped"}
    | {"timestamp", "hostname", "id", "package", "file", "log", "url"},
    "testcase": {"name", "time", "classname", "group"},
}
XSD_REQUIRED = {"testsuite": {"name", "tests", "failures", "errors"}, "testcase": {"name"}}
XSD_CHILDREN = {
    "testsuites": {"testsuite"},
    "testsuite": {"testsuite", "properties", "testcase", "system-out", "system-err"},
    # not in the XSD: <properties>, which pytest writes per test in every family
    "testcase": {"skipped", "error", "failure", "system-out", "system-err", "properties"},
}


def xunit2_violations(path) -> list[str]:
    root = ET.parse(path).getroot()
    problems = [] if root.tag == "testsuites" else [f"root <{root.tag}>"]
    for element in root.iter():
        if element.tag not in XSD_ATTRIBUTES:
            continue
        extra = set(element.attrib) - XSD_ATTRIBUTES[element.tag]
        missing = XSD_REQUIRED.get(element.tag, set()) - set(element.attrib)
        children = {child.tag for child in element} - XSD_CHILDREN[element.tag]
        problems += [f"<{element.tag}> {what}" for what in (extra, missing, children) if what]
    return problems


@pytest.fixture
def fleet(tmp_path):
    return write_fleet(tmp_path / "in", nodes=3, gpus=2, ranks=2, fail={"gpu-node02": "ecc"})


def merge(*args) -> int:
    return main(["merge", *map(str, args)])


def test_suites_are_named_per_node_and_rank_and_keep_their_metadata(fleet, tmp_path):
    out = tmp_path / "merged.xml"
    assert merge(*fleet, "-o", out) == 0
    merged = read_suites(out)
    originals = [suite for path in fleet for suite in read_suites(path)]
    assert [suite.get("name") for suite in merged] == labels(3, ranks=2)
    for suite, original in zip(merged, originals, strict=True):
        for attribute in ("hostname", "timestamp", "tests", "failures", "errors", "skipped"):
            assert suite.get(attribute) == original.get(attribute), attribute
        assert float(suite.get("time")) == float(original.get("time"))
        properties = [(p.get("name"), p.get("value")) for p in suite.find("properties")]
        original_properties = [(p.get("name"), p.get("value")) for p in original.find("properties")]
        assert properties[:-2] == original_properties
        assert dict(properties[-2:]) == {
            "merge.source": f"junit-{suite.get('name').replace('/', '-')}.xml",
            "merge.classname_prefix": f"{suite.get('name')}.",
        }


def test_no_duplicate_classname_and_name_and_test_properties_kept(fleet, tmp_path):
    out = tmp_path / "merged.xml"
    assert merge(*fleet, "-o", out) == 0
    cases = list(ET.parse(out).getroot().iter("testcase"))
    pairs = Counter((case.get("classname"), case.get("name")) for case in cases)
    assert len(cases) == sum(len(list(s.iter("testcase"))) for p in fleet for s in read_suites(p))
    assert max(pairs.values()) == 1
    case = next(c for c in cases if c.get("name") == "test_copy_within_a_gpu[cuda:1]")
    assert case.get("classname") == "gpu-node01.suites.hardware.test_bandwidth"
    names = [p.get("name") for p in case.iter("property")]
    assert "metric.d2d_copy_bandwidth.tolerance" in names
    assert "gpu" in names
    failed = next(c for c in cases if c.find("failure") is not None)
    assert "ecc_volatile_uncorrected = 2, limit 0" in failed.find("failure").get("message")


def test_the_merged_file_reads_like_its_inputs_and_is_xunit2(fleet, tmp_path):
    out = tmp_path / "merged.xml"
    assert merge(*fleet, "-o", out) == 0
    before, after = load_report(fleet), load_report([out])
    assert [(r.label, c) for r, c in after.cases()] == [(r.label, c) for r, c in before.cases()]
    assert xunit2_violations(out) == []
    root = ET.parse(out).getroot()
    assert int(root.get("tests")) == sum(1 for _ in before.cases())
    assert int(root.get("failures")) == 1


def test_merging_a_merged_file_again_changes_nothing(fleet, tmp_path):
    once, twice = tmp_path / "once.xml", tmp_path / "twice.xml"
    assert merge(*fleet, "-o", once) == 0
    assert merge(once, "-o", twice) == 0
    assert twice.read_bytes() == once.read_bytes()
    # a merge of merges (two nights' per-node files merged, then merged together)
    night2 = write_fleet(tmp_path / "n2", nodes=2, gpus=2, seed=5)
    other = tmp_path / "other.xml"
    assert merge(*night2, "-o", other) == 0
    assert merge(once, other, "-o", twice) == 0
    names = [suite.get("name") for suite in read_suites(twice)]
    assert names[-2:] == ["gpu-node01#2", "gpu-node02#2"]
    classnames = {
        c.get("classname").split(".")[0] for c in ET.parse(twice).getroot().iter("testcase")
    }
    assert "gpu-node01#2" in classnames
    assert not any(n.count("gpu-node") > 1 for n in classnames)


def test_the_same_node_twice_stays_unique(fleet, tmp_path):
    out = tmp_path / "merged.xml"
    assert merge(fleet[0], fleet[0], "-o", out) == 0
    cases = list(ET.parse(out).getroot().iter("testcase"))
    assert len({(c.get("classname"), c.get("name")) for c in cases}) == len(cases)


def test_a_corrupt_input_stops_the_merge_and_leaves_the_output_alone(tmp_path, capsys):
    paths = write_fleet(tmp_path / "in", nodes=3, gpus=1, corrupt={"gpu-node02"})
    out = tmp_path / "merged.xml"
    out.write_text("last night's merge")
    assert merge(*paths, "-o", out) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "junit-gpu-node02.xml: not valid XML" in error
    assert out.read_text() == "last night's merge"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "merged.xml"]  # no temp file


def test_skip_bad_warns_and_merges_the_rest(tmp_path, capsys):
    paths = write_fleet(tmp_path / "in", nodes=3, gpus=1, corrupt={"gpu-node02"})
    out = tmp_path / "merged.xml"
    assert merge(*paths, tmp_path / "missing.xml", "-o", out, "--skip-bad") == 0
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    assert all(line.startswith("warning: ") for line in warnings)
    assert "missing.xml: no such file" in warnings[1]
    assert [suite.get("name") for suite in read_suites(out)] == ["gpu-node01", "gpu-node03"]


def test_nothing_left_to_merge_is_an_error(tmp_path, capsys):
    out = tmp_path / "merged.xml"
    assert merge(tmp_path / "a.xml", "-o", out, "--skip-bad") == 2
    assert "nothing to merge" in capsys.readouterr().err
    assert not out.exists()


def test_an_output_in_a_missing_directory_is_written_there(fleet, tmp_path):
    assert merge(*fleet, "-o", tmp_path / "new" / "merged.xml") == 0
    assert (tmp_path / "new" / "merged.xml").is_file()


def test_an_output_that_cannot_be_written_is_one_line(fleet, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert merge(*fleet, "-o", tmp_path / "a-file" / "merged.xml") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "merged.xml: cannot write: " in error
