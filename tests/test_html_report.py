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


def ciid(*command):
    result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", *map(str, command)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("html") / "run"
    ciid("evaluate", "--data", BUNDLED_SAMPLE, "--out", run, "--defences", "none,jpeg,ciid", "--attacks", "fgsm",
         "--eps", "4/255", "--limit", "3", "--no-sanity", "--threads", "1")
    return run


@pytest.fixture(scope="module")
def report(run):
    """The page without pictures (kept aside: ``pictured`` writes report.html again)."""
    ciid("report", run, "--html")
    plain = run / "plain.html"
    plain.write_text((run / "report.html").read_text())
    return plain


@pytest.fixture(scope="module")
def pictured(run, report):
    ciid("report", run, "--html", "--pictures")
    return run / "report.html"


def dom(page, fragment: str, profile) -> str:
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                             "--dump-dom", f"{page.as_uri()}{fragment}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def browser_rows(page: str) -> list[str]:
    body = page.split('id="browser"')[1].split("<tbody>")[1].split("</tbody>")[0]
    return re.findall(r"<tr>(.*?)</tr>", body, re.S)


def test_the_page_is_self_contained(report):
    page = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not reach the network"
    assert "default-src 'none'" in page and page.count("data:image/png;base64,") >= 2  # the figures, inlined
    assert "n01440764_tench.JPEG" in page


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")
def test_the_page_renders_in_a_real_browser_and_its_filter_works(report, tmp_path):
    everything = dom(report, "", tmp_path / "profile")
    assert everything.count('<table class="summary">') >= 3  # the summary's tables, as tables
    shown = re.search(r'<span id="shown">(\d+) of (\d+) outcomes', everything)
    assert shown and shown.group(1) == shown.group(2) == str(3 * 3 * 2)  # 3 images x 3 defences x (clean, FGSM)
    assert 'data-loaded="yes"' in everything  # a thumbnail decoded in the browser
    assert "No pictures of attacked and defended images" in everything
    filtered = dom(report, "#defence=none&outcome=lost", tmp_path / "profile")  # the undefended model's losses
    rows = browser_rows(filtered)
    assert rows and all("<td>none</td>" in row and 'class="lost"' in row for row in rows)
    lost = int(re.search(r'<span id="shown">(\d+) of', filtered).group(1))
    assert 0 < lost < 18 and len(rows) == lost


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")
def test_pictures_show_the_attacked_and_defended_images_the_run_scored(pictured, tmp_path):
    page = dom(pictured, "#defence=ciid&pictured=yes", tmp_path / "profile")
    # the first batch (all 3 images) remade under clean and FGSM for 3 defences, every prediction as stored
    assert "Pictures: the run's first 3 images" in page and "18 of 18 give the stored predictions." in page
    rows = browser_rows(page)
    assert len(rows) == 3 * 2 and all("<td>ciid</td>" in row for row in rows)
    for row in rows:
        assert len(re.findall(r'<img class="picture"[^>]*data-loaded="yes"', row)) == 2  # attacked, defended


def test_pictures_need_html(run):
    result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "report", str(run), "--pictures"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "give --html too" in result.stderr and "Traceback" not in result.stderr
