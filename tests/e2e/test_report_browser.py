"""The HTML summary of a generated 16-node fleet, opened in headless Chromium: it renders (a
screenshot with the matrix's pass and fail colours) and says what it should (the DOM after
rendering: nodes, a failure message, a judged figure, a fleet outlier).

Needs Debian's ``chromium``; without it the test skips saying so, unless
``HARNESS_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pytest_run import REPO, clean_env
from tests.report_data import host, write_fleet

pytest.importorskip("jinja2", reason="the summary needs the report extra (jinja2)")
Image = pytest.importorskip("PIL.Image", reason="reading the screenshot needs Pillow")

WINDOW = (1400, 1600)
PASS_BACKGROUND = (0xDA, 0xFB, 0xE1)  # the matrix's colours (templates/summary.html)
FAIL_BACKGROUND = (0xFF, 0xD8, 0xD3)
ECC_NODE, SLOW_GPU_NODE = host(4), host(10)


@pytest.fixture(scope="module")
def browser() -> str:
    """Chromium's path; looked for before the page is generated, so a skip is quick."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}, and HARNESS_REQUIRE_BROWSER=1 requires the browser test")
        pytest.skip(reason)
    return path


def browse(browser: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a local file, with a fresh profile and nothing fetched."""
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root in a container
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    files = write_fleet(
        tmp / "junit", nodes=16, fail={ECC_NODE: "ecc"}, slow={(SLOW_GPU_NODE, 3): 0.9}
    )
    output = tmp / "reports" / "summary.html"
    done = subprocess.run(
        [sys.executable, "-m", "harness.report", "summary", *map(str, files), "-o", str(output)],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return output


def test_screenshot_shows_the_rendered_matrix(browser, page, tmp_path):
    shot = tmp_path / "summary.png"
    browse(
        browser,
        page,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size={},{}".format(*WINDOW),
    )
    assert shot.stat().st_size > 20_000
    with Image.open(shot) as image:
        assert image.size == WINDOW
        colours = image.convert("RGB").getcolors(maxcolors=WINDOW[0] * WINDOW[1])
    counts = {colour: count for count, colour in colours}
    assert len(counts) > 50  # text, tiles, cells: not a blank or single-colour page
    assert counts.get(PASS_BACKGROUND, 0) > 5_000  # 16 nodes' passing cells
    assert counts.get(FAIL_BACKGROUND, 0) > 100  # the ECC node's failing cell and banner


def test_rendered_page_says_which_node_failed_and_what_stands_out(browser, page, tmp_path):
    dom = browse(browser, page, tmp_path / "profile", "--dump-dom").stdout
    assert "FAIL — 1 failing case on 1 of 16 nodes" in dom
    for index in range(16):
        assert f"<span>{host(index)}</span>" in dom
    failures = dom[dom.index('id="failures"') : dom.index('id="outliers"')]
    assert ECC_NODE in failures
    assert "ecc_volatile_uncorrected = 2, limit 0" in failures
    # A judged figure with its reference, and the slow GPU flagged as an outlier.
    assert "2930 GB/s, -20%/+15% (warn beyond 10%)" in dom
    outliers = dom[dom.index('id="outliers"') : dom.index('id="plots"')]
    # one row naming the node and its GPU, the figures folded beneath
    assert re.search(
        rf"<b>{SLOW_GPU_NODE}</b></td><td><div>GPU 3 \(cuda:3, NVIDIA H100 80GB HBM3, GPU-[^<]*\)"
        r"</div>"
        r"</td><td[^>]*><div>17 of 17</div>",
        outliers,
    )
    assert "p2p_bandwidth in 14 pairs" in outliers
    assert f"<summary><b>{SLOW_GPU_NODE}</b>: every outlying figure (17)</summary>" in outliers
    assert "test_bf16_matmul[cuda:3]" in outliers.split("<details", 1)[1]
    assert re.search(r'class="fig v-\w+ outlier"[^>]*>[\d.]+ \S*⚑', dom)
    images = re.findall(r'<img src="data:image/png;base64,', dom)
    assert len(images) >= 5  # copy, host, peer (strip and heatmap), all-reduce, matmul
