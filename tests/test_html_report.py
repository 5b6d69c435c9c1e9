"""``ciid report --html``: one self-contained page, opened in a real browser (headless Chromium): its tables render,
an image loads, and a filter set in the address shows only what it selects."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from conftest import BUNDLED_SAMPLE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = tmp_path_factory.mktemp("html") / "run"
    for command in (["evaluate", "--data", str(BUNDLED_SAMPLE), "--out", str(run), "--defences", "none,jpeg",
                     "--attacks", "fgsm", "--eps", "4/255", "--limit", "3", "--no-sanity", "--threads", "1"],
                    ["report", str(run), "--html"]):
        result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", *command], capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    return run / "report.html"


def test_the_page_is_self_contained(report):
    page = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not reach the network"
    assert "default-src 'none'" in page and page.count("data:image/png;base64,") >= 2  # the figures, inlined
    assert "n01440764_tench.JPEG" in page


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")
def test_the_page_renders_in_a_real_browser_and_its_filter_works(report, tmp_path):
    def dom(fragment: str) -> str:
        result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                 f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                                 f"{report.as_uri()}{fragment}"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    everything = dom("")
    assert everything.count('<table class="summary">') >= 3  # the summary's tables, as tables
    shown = re.search(r'<span id="shown">(\d+) of (\d+) outcomes', everything)
    assert shown and shown.group(1) == shown.group(2) == str(3 * 2 * 2)  # 3 images x 2 defences x (clean, FGSM)
    assert 'data-loaded="yes"' in everything  # a thumbnail decoded in the browser
    filtered = dom("#defence=none&outcome=lost")  # the undefended model's losses: FGSM's, at least
    body = filtered.split('id="browser"')[1].split("<tbody>")[1].split("</tbody>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    assert rows and all("<td>none</td>" in row and 'class="lost"' in row for row in rows)
    lost = int(re.search(r'<span id="shown">(\d+) of', filtered).group(1))
    assert 0 < lost < 12 and len(rows) == lost
