"""``harness.report.summary``: what the HTML page and the Markdown say about a generated fleet.

The fleet (``tests.report_data``) has eight nodes with eight H100s each and torchrun ranks;
gpu-node03 has uncorrectable ECC errors, gpu-node06's GPU 2 copies below its tolerance,
gpu-node07's bf16 matmul errors, GPU 5 of gpu-node04 is 9% slow (inside the tolerance, a fleet
outlier), and gpu-node08 never ran the peer-to-peer checks.
"""

from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the summary needs the report extra (jinja2)")
pytest.importorskip("matplotlib", reason="the summary's plots need the report extra (matplotlib)")

from harness.report import merge, summary
from harness.report.__main__ import main
from harness.report.model import Case, Figure, Report, Run, load_report
from tests.report_data import write_fleet

ECC_NODE, SLOW_COPY_NODE, ERROR_NODE, SLOW_GPU_NODE, NO_P2P_NODE = (
    "gpu-node03",
    "gpu-node06",
    "gpu-node07",
    "gpu-node04",
    "gpu-node08",
)
SCRIPT = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> list[Path]:
    return write_fleet(
        tmp_path_factory.mktemp("fleet"),
        nodes=8,
        fail={ECC_NODE: "ecc", SLOW_COPY_NODE: "bandwidth", ERROR_NODE: "error"},
        slow={(SLOW_GPU_NODE, 5): 0.91},
        vanish={NO_P2P_NODE: "test_peer_to_peer"},
        ranks=2,
    )


def cli(*argv: str | Path) -> int:
    """``python -m harness.report summary ARGV...``, in this process."""
    return main(["summary", *(str(arg) for arg in argv)])


@pytest.fixture(scope="module")
def pages(fleet, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("out")
    assert cli(*fleet, "-o", out / "deep" / "summary.html") == 0
    assert cli(*fleet, "-o", out / "summary.md", "--format", "md") == 0
    return {
        "html": (out / "deep" / "summary.html").read_text(encoding="utf-8"),
        "md": (out / "summary.md").read_text(encoding="utf-8"),
    }


class Tables(HTMLParser):
    """Every table row of a page as ([cell texts], [cell classes]), header cells included."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.rows: list[tuple[list[str], list[str]]] = []
        self._row: tuple[list[str], list[str]] | None = None
        self._text: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = ([], [])
        elif tag in ("td", "th") and self._row is not None:
            self._row[1].append(dict(attrs).get("class") or "")
            self._text = []

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._text is not None:
            self._row[0].append("".join(self._text).strip())
            self._text = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def row(self, head: str) -> tuple[list[str], list[str]]:
        """The cells after the first cell of the first row whose first cell starts with head."""
        for texts, classes in self.rows:
            if texts and texts[0].startswith(head):
                return texts[1:], classes[1:]
        raise AssertionError(f"no row {head!r}")


def section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}"')
    return page[start : page.index("</section>", start)]


def node_column(node: str) -> int:
    return int(node.removeprefix("gpu-node")) - 1


# The matrix -----------------------------------------------------------------------------------


def test_matrix_marks_each_nodes_outcome_per_module_with_symbol_and_colour(pages):
    tables = Tables(section(pages["html"], "matrix"))
    texts, classes = tables.row("hardware.test_health")
    assert len(texts) == 8
    assert (texts[node_column(ECC_NODE)], classes[node_column(ECC_NODE)]) == ("✗1", "cell fail")
    assert texts.count("✓") == 7
    texts, classes = tables.row("hardware.test_compute")
    assert (texts[node_column(ERROR_NODE)], classes[node_column(ERROR_NODE)]) == (
        "E1",
        "cell error",
    )
    texts, classes = tables.row("hardware.test_bandwidth")
    assert texts[node_column(SLOW_COPY_NODE)] == "✗1"
    assert texts[node_column(NO_P2P_NODE)] == "✓·56"  # its 56 peer-to-peer checks are missing
    assert "56 not run here" in pages["html"]
    texts, classes = tables.row("dp.test_rnn")
    assert set(texts) == {"S"}
    assert set(classes) == {"cell skip"}


def test_matrix_has_every_checks_row_and_marks_checks_a_node_did_not_run(pages):
    tables = Tables(section(pages["html"], "checks"))
    texts, classes = tables.row("test_peer_to_peer[cuda:0-cuda:1]")
    assert texts[node_column(NO_P2P_NODE)] == "·"
    assert classes[node_column(NO_P2P_NODE)] == "cell none"
    assert texts.count("✓") == 7
    texts, _ = tables.row("test_copy_within_a_gpu[cuda:2]")
    assert texts[node_column(SLOW_COPY_NODE)] == "✗1"
    assert 'id="g-hardware.test_bandwidth" open' in pages["html"]  # a failing module is open
    assert 'id="g-dp.test_gather">' in pages["html"]  # a passing one is closed


def test_torchrun_ranks_are_their_nodes_column():
    def run(rank: str | None, outcome: str) -> Run:
        case = Case(
            "suites.ddp.test_sync::test_x", "suites.ddp.test_sync", "test_x", outcome, "boom"
        )
        return Run("f.xml", "pytest", "node1", rank, "", "node1", 0.0, (), (case,))

    built = summary.build_summary(
        Report([run("0", "passed"), run("1", "failed"), run(None, "passed")]), []
    )
    assert built.nodes == ["node1"]
    (group,) = built.groups
    assert (group.cells[0].mark, group.cells[0].counts["passed"]) == ("✗1", 2)
    assert [(f.run, f.message) for f in built.failures] == [("node1/rank1", "boom")]


def test_node_columns_are_in_natural_order():
    def run(node: str) -> Run:
        return Run("f.xml", "pytest", node, None, "", node, 0.0, (), ())

    built = summary.build_summary(Report([run("n10"), run("n2"), run("n1")]), [])
    assert built.nodes == ["n1", "n2", "n10"]


def test_a_passing_cell_still_shows_its_skips_and_missing_checks():
    cell = summary.Cell(missing=3)
    for outcome in ("passed", "passed", "skipped"):
        cell.add(Case("m::t", "m", "t", outcome, "why" if outcome == "skipped" else ""))
    assert (cell.mark, cell.note, cell.css) == ("✓", "S1 ·3", "pass partial")
    assert cell.title == "2 passed, 1 skipped, 3 not run here\nwhy"


# Failures, figures, outliers ------------------------------------------------------------------


def test_failures_name_node_check_and_message(pages):
    table = Tables(section(pages["html"], "failures")).rows[1:]
    rows = {(texts[0], texts[1]): texts[2] for texts, _ in table}
    ecc = rows[ECC_NODE, "suites.hardware.test_health::test_no_uncorrectable_ecc_errors"]
    assert "GPU 3 (cuda:3, NVIDIA H100 80GB HBM3, GPU-" in ecc
    assert "ecc_volatile_uncorrected = 2, limit 0" in ecc
    copy = rows[SLOW_COPY_NODE, "suites.hardware.test_bandwidth::test_copy_within_a_gpu[cuda:2]"]
    assert copy.startswith("GPU 2 (cuda:2, NVIDIA H100 80GB HBM3, GPU-")
    assert "d2d_copy_bandwidth: 2051 GB/s: fail, below 2344 GB/s" in copy
    matmul = rows[ERROR_NODE, "suites.hardware.test_compute::test_bf16_matmul[cuda:0] E error"]
    assert "CUBLAS_STATUS_EXECUTION_FAILED" in matmul
    assert len(rows) == 3


def test_judged_figures_show_value_verdict_reference_and_tolerance(pages):
    texts, classes = Tables(section(pages["html"], "figures")).row("test_copy_within_a_gpu[cuda:2]")
    assert texts[:2] == ["d2d_copy_bandwidth (GB/s)", "2930 GB/s, -20%/+15% (warn beyond 10%)"]
    column = 3 + node_column(SLOW_COPY_NODE)
    assert texts[column].startswith("2051 ✗")
    assert classes[column].startswith("fig v-fail")
    assert all(text.endswith("✓") for i, text in enumerate(texts[3:]) if i != column - 3)
    assert (
        'title="2051 GB/s, reference 2930 GB/s (-20%/+15% (warn beyond 10%)), -30.0%: fail'
        in pages["html"]
    )


def test_figures_recorded_without_reference_are_listed_too(pages):
    texts, _ = Tables(section(pages["html"], "figures")).row("test_peer_to_peer[cuda:0-cuda:1]")
    assert texts[0] == "p2p_bandwidth (GB/s)"
    assert texts[1] == ""  # no reference
    assert texts[3 + node_column(NO_P2P_NODE)] == "·"
    assert all(re.fullmatch(r"3\d\d(\.\d+)?", t) for i, t in enumerate(texts[3:]) if i != 7)


def test_fleet_outliers_read_per_node_and_gpu_then_each_figure_is_folded_beneath(pages):
    page = section(pages["html"], "outliers")
    assert "<h2>Fleet outliers (18 on 2 nodes)</h2>" in page
    groups = page[: page.index("<details")]
    rows = {texts[0]: texts[1:] for texts, _ in Tables(groups).rows[1:]}
    assert list(rows) == [SLOW_COPY_NODE, SLOW_GPU_NODE]  # the worst first: GPU 2's copy, -30%
    gpu, count, what = rows[SLOW_GPU_NODE]
    assert gpu.startswith("GPU 5 (cuda:5, NVIDIA H100 80GB HBM3, GPU-")
    assert gpu.endswith(", 00000000:AB:00.0)")
    assert count == "17 of 17"
    assert "bf16_matmul_tflops -7.9%" in what
    assert "p2p_bandwidth in 14 pairs" in what
    assert rows[SLOW_COPY_NODE][1:] == ["1 of 1", "d2d_copy_bandwidth -29.8%"]
    folded = page[page.index("<details") :]
    assert f"<summary><b>{SLOW_GPU_NODE}</b>: every outlying figure (17)</summary>" in folded
    listed = {(texts[0], texts[1]) for texts, _ in Tables(folded).rows}
    assert (SLOW_GPU_NODE, "suites.hardware.test_compute::test_bf16_matmul[cuda:5]") in listed
    assert (SLOW_GPU_NODE, "suites.hardware.test_bandwidth::test_peer_to_peer[cuda:5-cuda:0]") in (
        listed
    )
    assert len(listed) == 18 + 1  # and the header


def test_fleet_outlier_is_flagged_in_its_figure_cell(pages):
    texts, classes = Tables(section(pages["html"], "figures")).row("test_bf16_matmul[cuda:5]")
    column = 3 + node_column(SLOW_GPU_NODE)
    assert texts[column].endswith("✓⚑")  # inside its tolerance, yet an outlier
    assert "outlier" in classes[column]


def test_different_references_across_nodes_are_shown_per_cell(tmp_path):
    mixed = write_fleet(tmp_path, nodes=2, gpus=1, model={"gpu-node02": "NVIDIA H200"})
    built = summary.build_summary(load_report(mixed), [])
    row = next(r for r in built.judged_figures if r.name == "d2d_copy_bandwidth")
    assert row.reference == "varies by node"
    assert "reference 2930 GB/s" in row.cells[0].title
    assert "reference 4200 GB/s" in row.cells[1].title


# Plots and self-containment -------------------------------------------------------------------


def test_page_is_self_contained_with_embedded_plots(pages):
    page = pages["html"]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page
    assert "<link" not in page
    assert "@import" not in page
    images = re.findall(r'<img src="([^"]*)" alt="([^"]*)"', page)
    titles = [alt for _, alt in images]
    for metric in ("d2d_copy_bandwidth", "h2d_pinned_bandwidth", "bf16_matmul_tflops"):
        assert f"{metric} (" in " ".join(titles)
    assert "p2p_bandwidth (GB/s) by node and GPU pair" in titles
    for source, _ in images:
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.removeprefix("data:image/png;base64,"))
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) > 5000


def test_plots_find_the_device_of_each_figure():
    from harness.report.plots import figure_device

    def device(case_name: str, figure_name: str) -> tuple[str, str | None]:
        return figure_device(
            Case("m::" + case_name, "m", case_name, "passed"), Figure(figure_name, 1, "MiB")
        )

    assert device("test_x[cuda:3]", "usable_memory") == ("usable_memory", "cuda:3")
    assert device("test_x[cuda:0-cuda:7]", "p2p") == ("p2p", "cuda:0-cuda:7")
    assert device("test_x[mlp]", "memory_step_peak.cuda2") == ("memory_step_peak", "cuda:2")
    assert device("test_x[mlp]", "memory_imbalance") == ("memory_imbalance", None)


# Escaping -------------------------------------------------------------------------------------


@pytest.fixture
def hostile(tmp_path) -> Path:
    """One node whose failure message, check name and host carry markup and table syntax."""
    path = tmp_path / "hostile.xml"
    message = html.escape(f"value | 3 {SCRIPT} <b>bold</b>", quote=True)
    path.write_text(
        '<testsuites><testsuite name="pytest" hostname="evil&lt;i&gt;">'
        f'<testcase classname="suites.x.test_y" name="test_z[&lt;img src=x&gt;]">'
        f'<failure message="{message}">trace</failure></testcase></testsuite></testsuites>',
        encoding="utf-8",
    )
    return path


def test_html_escapes_markup_from_junit(hostile, tmp_path):
    assert cli(hostile, "-o", tmp_path / "s.html") == 0
    page = (tmp_path / "s.html").read_text(encoding="utf-8")
    assert "<script" not in page
    assert "<img src=x>" not in page
    assert "<b>bold" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "evil&lt;i&gt;" in page


def test_markdown_escapes_markup_and_column_breaks(hostile, tmp_path):
    assert cli(hostile, "-o", tmp_path / "s.md", "--format", "md") == 0
    text = (tmp_path / "s.md").read_text(encoding="utf-8")
    assert "<script" not in text
    assert "<b>" not in text
    assert "value \\| 3 &lt;script&gt;alert('x')&lt;/script&gt;" in text
    failure = next(line for line in text.splitlines() if "alert" in line)
    assert len(re.findall(r"(?<!\\)\|", failure)) == 4  # three columns, whatever the message


# Markdown -------------------------------------------------------------------------------------


def test_markdown_has_the_same_tables_without_plots(pages):
    text = pages["md"]
    assert text.startswith("# Harness report\n\n**✗ FAIL** — 3 failing cases on 3 of 8 nodes")
    header = next(line for line in text.splitlines() if line.startswith("| Module |"))
    assert header.count("gpu-node") == 8
    health = next(line for line in text.splitlines() if line.startswith("| hardware.test_health"))
    assert health.split("|")[2 + node_column(ECC_NODE)].strip() == "✗1"
    assert f"| **{ECC_NODE}** | suites.hardware.test_health::" in text
    assert "ecc_volatile_uncorrected = 2, limit 0 |" in text
    assert "| 2930 GB/s, -20%/+15% (warn beyond 10%) |" in text
    assert "## Fleet outliers (18 on 2 nodes)" in text
    group = next(line for line in text.splitlines() if line.startswith(f"| **{SLOW_GPU_NODE}** |"))
    assert group.startswith(f"| **{SLOW_GPU_NODE}** | GPU 5 (cuda:5, NVIDIA H100 80GB HBM3, GPU-")
    assert "| 17 of 17 | h2d_pinned_bandwidth -10.5%, " in group
    assert f"<details><summary>{SLOW_GPU_NODE}: every outlying figure (17)</summary>\n\n|" in text
    assert (
        f"| **{SLOW_GPU_NODE}** | suites.hardware.test_compute::test_bf16_matmul[cuda:5] |" in text
    )
    assert "✓⚑" in text
    # Only checks that did not pass everywhere get their own row: 56 p2p pairs (missing on
    # one node), the ECC check, GPU 2's copy, GPU 0's matmul and the skipped RNN check.
    assert "### Checks that did not pass on every node (60 of " in text
    assert f"**· Not run** (checks other nodes ran): 56 on {NO_P2P_NODE}\n" in text
    assert "<img" not in text
    assert "data:image" not in text
    for line in text.splitlines():
        if line.startswith("|"):
            assert line.endswith("|"), line


# The command line -----------------------------------------------------------------------------


def test_output_is_written_atomically_into_a_new_directory(fleet, tmp_path):
    output = tmp_path / "a" / "b" / "summary.md"
    assert cli(*fleet, "-o", output, "--format", "md") == 0
    assert output.read_text(encoding="utf-8").startswith("# Harness report")
    assert [p.name for p in output.parent.iterdir()] == ["summary.md"]  # no temporary left
    assert output.stat().st_mode & 0o044 == 0o044  # readable like any file the user writes


def test_markdown_to_standard_output(fleet, capsys):
    assert cli(*fleet[:2], "-o", "-", "--format", "md", "--title", "Nightly 27 Nov") == 0
    assert capsys.readouterr().out.startswith("# Nightly 27 Nov\n")


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_a_bad_input_is_one_line_naming_it_and_nothing_is_written(tmp_path, capsys, problem):
    paths = write_fleet(tmp_path, nodes=2, gpus=1, corrupt={"gpu-node02"})
    bad = tmp_path / "gone.xml" if problem == "missing" else paths[1]
    output = tmp_path / "out" / "summary.html"
    assert cli(paths[0], bad, "-o", output) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert str(bad) in error
    assert error.startswith("harness report summary: ")
    assert not output.exists()


def test_an_existing_summary_survives_a_failed_write(fleet, tmp_path, monkeypatch, capsys):
    output = tmp_path / "summary.md"
    output.write_text("last night's", encoding="utf-8")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(merge.os, "replace", disk_full)
    assert cli(*fleet, "-o", output, "--format", "md") == 2
    assert capsys.readouterr().err == (
        f"harness report summary: {output}: cannot write: No space left on device\n"
    )
    assert output.read_text(encoding="utf-8") == "last night's"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]
