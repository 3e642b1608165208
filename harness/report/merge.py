"""``python -m harness.report merge FILES... -o OUT``: one JUnit file from many nodes and ranks.

Each input ``<testsuite>`` becomes one output suite named after its run (``gpu-node07``,
``gpu-node07/rank3``; ``#2``, ``#3`` on a label seen before, as when one node ran two pytest
sessions), keeping its properties, ``hostname``, ``timestamp`` and ``time``; counts are
recounted from its cases. The suites are built one by one: junitparser's ``+=`` makes a new
suite from the cases alone and so drops suite properties, hostname and timestamp.

CI reporters identify a test by (classname, name) and ignore the suite: GitLab keeps only the
first of equal pairs, Jenkins files them under one class and mixes their histories. So every
classname gets its run's label in front (``gpu-node07.suites.hardware.test_health``), and the
suite records that prefix in ``merge.classname_prefix``; ``harness.report.model`` takes it off
again, and a merged file merged again (a week of nightly merges) is not prefixed twice.

The output follows the xunit2 schema pytest writes (Jenkins' junit-10.xsd: no ``skipped``
attribute on ``<testsuites>``) except for the per-test ``<properties>``, which pytest writes in
every family and the reporters read. It is written to a temporary file beside ``OUT`` and
renamed over it: ``OUT`` is either the old file or the whole new one.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from junitparser import JUnitXml, TestSuite

from harness import files, properties
from harness.report.model import ReportError, parse_run, read_suites


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JUnit files to merge")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="merged JUnit file")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="warn about a missing or unreadable input and merge the rest (default: stop)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        merged, warnings = merge(args.files, skip_bad=args.skip_bad)
        for warning in warnings:
            print(f"warning: {warning} (skipped)", file=sys.stderr)
        write_atomic(args.output, to_bytes(merged))
    except ReportError as err:
        print(f"harness report merge: {err}", file=sys.stderr)
        return 2
    suites = list(merged)
    tests = sum(suite.tests for suite in suites)
    print(f"{args.output}: {len(suites)} suites, {tests} tests from {len(args.files)} files")
    return 0


def merge(paths: list[str], *, skip_bad: bool = False) -> tuple[JUnitXml, list[str]]:
    """The merged document and, under ``skip_bad``, one warning per input left out."""
    merged = JUnitXml(name="gpu-harness merged")
    labels: dict[str, int] = {}
    warnings = []
    for path in paths:
        try:
            elements = read_suites(path)
            suites = [(element, parse_run(path, element, i)) for i, element in enumerate(elements)]
        except ReportError as err:
            if not skip_bad:
                raise
            warnings.append(str(err))
            continue
        for element, parsed in suites:
            labels[parsed.label] = labels.get(parsed.label, 0) + 1
            count = labels[parsed.label]
            label = parsed.label if count == 1 else f"{parsed.label}#{count}"
            merged.append(_suite(element, label, path))
    suites = list(merged)
    if not suites:
        raise ReportError("nothing to merge: every input was skipped")
    for attribute in ("tests", "failures", "errors"):  # not skipped: junit-10.xsd has none here
        setattr(merged, attribute, sum(getattr(suite, attribute) for suite in suites))
    merged.time = round(sum(suite.time for suite in suites), 3)
    return merged, warnings


def _suite(element: ET.Element, label: str, path: str) -> TestSuite:
    old = TestSuite.fromelem(element)
    props = {p.name: p.value for p in old.properties()}
    old_prefix = props.get(properties.MERGE_PREFIX, "")
    prefix = f"{label}."
    suite = TestSuite(label)
    for attribute in ("hostname", "timestamp"):
        if element.get(attribute) is not None:
            setattr(suite, attribute, element.get(attribute))
    for name, value in ((p.name, p.value) for p in old.properties()):
        if name not in (properties.MERGE_PREFIX, properties.MERGE_SOURCE):
            suite.add_property(name, value)
    suite.add_property(properties.MERGE_SOURCE, props.get(properties.MERGE_SOURCE, Path(path).name))
    suite.add_property(properties.MERGE_PREFIX, prefix)
    for case_element in element.iter("testcase"):
        case = copy.deepcopy(case_element)
        classname = case.get("classname", "")
        if old_prefix and classname.startswith(old_prefix):
            classname = classname.removeprefix(old_prefix)
        case.set("classname", prefix + classname)
        suite.append(TestSuite.testcase.fromelem(case))
    suite.update_statistics()
    if element.get("time") is not None:  # the session's wall time, setup and collection included
        suite.time = float(element.get("time"))
    return suite


def to_bytes(document: JUnitXml) -> bytes:
    text = ET.tostring(document._elem, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + text).encode()


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """``harness.files.write_atomic``, its errors one-line ``ReportError``s naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # as summary does: reports/ may be new
        files.write_atomic(path, data)
    except OSError as err:
        raise ReportError(f"{path}: cannot write: {err.strerror or err}") from None
