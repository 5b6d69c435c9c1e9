"""Certification runs: typed rows, the same radii after a kill and --resume, retries, and the smoothed classify."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from scipy.stats import norm
from torch import nn

from ciidefence.models.custom import custom_classifier
from ciidefence.smoothing import ABSTAIN, SmoothedClassifier
from conftest import BUNDLED_SAMPLE

CIID = [sys.executable, "-m", "ciidefence.cli.main"]
SMALL = ["--limit", "3", "--sigma", "0.12,0.25", "--denoiser", "none,wavelet", "--n0", "8", "--n", "48",
         "--batch-size", "16", "--threads", "1"]


def certify(data, out, *extra, check=True):
    result = subprocess.run([*CIID, "certify", "--data", str(data), "--out", str(out), *map(str, extra)],
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def certificates(out):
    with sqlite3.connect(out / "results.sqlite") as connection:
        return sorted(connection.execute("SELECT image, setting, sigma, front, front_hash, top_class, count, p_lower, "
                                         "radius, prediction, correct, error FROM certificates"))


def test_a_killed_certification_resumes_to_the_radii_of_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    result = certify(BUNDLED_SAMPLE, reference, *SMALL)
    expected = certificates(reference)
    assert len(expected) == 3 * 2 * 2 and not [row for row in expected if row[-1]]
    assert "| 0.12 | none | 3 |" in result.stdout and "r = 0.25" in result.stdout
    for name in ("certify.md", "certify.csv", "certify.json", "certified_accuracy.png"):
        assert (reference / name).is_file()
    fronts = {row[3]: row[4] for row in expected}
    assert set(fronts) == {"none", "wavelet"}
    # every front sees the same noise: with nothing in front, the counts are the bare classifier's on those draws
    settings = json.loads(sqlite3.connect(reference / "results.sqlite").execute(
        "SELECT value FROM meta WHERE key='settings'").fetchone()[0])
    assert {s["front"] for s in settings} == {"none", "wavelet"} and all(s["n"] == 48 for s in settings)

    killed = tmp_path / "killed"
    process = subprocess.Popen([*CIID, "certify", "--data", str(BUNDLED_SAMPLE), "--out", str(killed), *SMALL],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written, deadline = 0, time.time() + 300
    while time.time() < deadline and process.poll() is None and written < 3:
        if (killed / "results.sqlite").exists():
            try:
                with sqlite3.connect(killed / "results.sqlite", timeout=1) as connection:
                    written = connection.execute("SELECT COUNT(*) FROM certificates").fetchone()[0]
            except sqlite3.OperationalError:
                pass
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = certificates(killed)
    assert 3 <= len(partial) < len(expected), "the run was not killed partway"
    plan = certify(BUNDLED_SAMPLE, killed, *SMALL, "--resume", "--dry-run").stdout
    left = sum(int(line.split(" images left")[0].split()[-1]) for line in plan.splitlines() if "images left" in line)
    assert left == len(expected) - len(partial) and "estimated time left" in plan
    certify(BUNDLED_SAMPLE, killed, *SMALL, "--resume")
    assert certificates(killed) == expected  # nothing lost, nothing twice, the same radii
    (killed / "certify.md").unlink()
    report = subprocess.run([*CIID, "report", str(killed)], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0 and "| 0.12 | none | 3 |" in report.stdout and (killed / "certify.md").is_file()


def test_a_resumed_certification_with_other_settings_is_refused_and_bad_options_write_nothing(tmp_path):
    out = tmp_path / "run"
    certify(BUNDLED_SAMPLE, out, "--limit", "1", "--sigma", "0.5", "--denoiser", "none", "--n0", "4", "--n", "8",
            "--batch-size", "12", "--threads", "1")
    other = certify(BUNDLED_SAMPLE, out, "--limit", "1", "--sigma", "0.25", "--denoiser", "none", "--n0", "4",
                    "--n", "8", "--resume", check=False)
    assert other.returncode == 2 and "different configuration" in other.stderr
    for options, message in ((["--sigma", "0"], "must lie in (0, 1]"), (["--denoiser", "magic"], "unknown front"),
                             (["--retry-errors"], "--resume"), (["--workers", "2"], "need --ray")):
        bad = certify(BUNDLED_SAMPLE, tmp_path / "bad", "--limit", "1", *options, check=False)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()


def test_an_unreadable_image_is_recorded_and_retried(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(BUNDLED_SAMPLE, data)
    victim = sorted(data.glob("*.JPEG"))[1]
    original = victim.read_bytes()
    victim.write_bytes(b"\0" * len(original))
    options = ["--limit", "2", "--sigma", "0.25", "--denoiser", "none", "--n0", "4", "--n", "8", "--batch-size",
               "12", "--threads", "1"]
    certify(data, tmp_path / "run", *options)
    rows = certificates(tmp_path / "run")
    assert [row[0] for row in rows if row[-1]] == [victim.name]
    assert "1 unreadable" in (tmp_path / "run" / "certify.md").read_text()
    victim.write_bytes(original)
    certify(data, tmp_path / "run", *options, "--resume", "--retry-errors")
    again = certificates(tmp_path / "run")
    assert len(again) == 2 and not [row for row in again if row[-1]]
    assert [row for row in again if row[0] != victim.name] == [row for row in rows if row[0] != victim.name]


class MeanSign(nn.Module):
    """Two logits, +m and -m, from the mean m of the scaled image: a coin toss on a noisy mid-grey image."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mean = features.mean((1, 2, 3))
        return torch.stack([mean, -mean], 1)


def coin_classifier():
    body, head = nn.Identity(), MeanSign()
    return custom_classifier(nn.Sequential(body, head), body, head, input_size=32, mean=(0.5, 0.5, 0.5),
                             std=(1.0, 1.0, 1.0), name="coin", class_names=["bright", "dark"])


def test_the_smoothed_classifier_abstains_where_the_votes_split_and_certifies_where_they_agree():
    smoothed = SmoothedClassifier(coin_classifier(), 0.25, n0=20, n=200, alpha=0.001, batch_size=50)
    grey, bright = torch.full((1, 3, 32, 32), 0.5), torch.full((1, 3, 32, 32), 0.6)
    output = smoothed(torch.cat([grey, bright]))
    assert output.classes.tolist() == [ABSTAIN, 0]
    every_draw_agrees = 0.25 * norm.ppf(0.001 ** (1 / 200))  # the largest radius N = 200 can certify
    assert output.radii[0] == 0 and output.radii[1].item() == pytest.approx(every_draw_agrees, rel=1e-9)
    assert 60 < output.certificates[0].count < 140 and output.certificates[1].count == 200


def test_classify_with_the_smoothed_classifier_prints_a_class_and_radius_or_abstain(tmp_path):
    result = subprocess.run([*CIID, "classify", str(BUNDLED_SAMPLE / "n01440764_tench.JPEG"), "--defence",
                             "none,smoothed", "--smoothing-front", "none", "--smoothing-sigma", "0.12",
                             "--smoothing-n0", "8", "--smoothing-n", "32", "--threads", "1", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    prediction = json.loads(result.stdout)["results"][0]["predictions"]["smoothed"][0]
    assert set(prediction) == {"class", "name", "probability", "radius", "p_lower"}
    assert (prediction["class"] == ABSTAIN) == (prediction["name"] == "abstain") == (prediction["radius"] == 0)
    bad = subprocess.run([*CIID, "classify", str(BUNDLED_SAMPLE), "--defence", "smoothed", "--smoothing-front",
                          "magic"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--smoothing-front 'magic'" in bad.stderr


def test_the_attack_check_holds_for_a_sound_certificate_and_trips_on_a_broken_one():
    from ciidefence.smoothing import certify
    from ciidefence.smoothing.attack import flips_within

    classifier = coin_classifier()
    view = classifier.prepare(torch.full((1, 3, 32, 32), 0.6))[0]
    certificate = certify(classifier, view, 0.25, 20, 200, 0.001, 100, torch.Generator().manual_seed(0))
    assert certificate.prediction == 0 and certificate.radius > 0.4

    def check(radius):
        return flips_within(classifier, classifier, view, 0, radius, 0.25, 200, 0.001, 100,
                            torch.Generator().manual_seed(1), steps=10, samples=8)

    sound = check(certificate.radius)
    assert not sound.flipped and sound.prediction == 0 and sound.l2 <= certificate.radius
    broken = check(20 * certificate.radius)  # a certificate that claims far more than the smoothed model holds
    assert broken.flipped and broken.prediction == 1 and broken.l2 <= 20 * certificate.radius


def test_certify_checks_its_certificates_by_attack_and_reports_the_flips(tmp_path):
    out = tmp_path / "run"
    certify(BUNDLED_SAMPLE, out, "--limit", "2", "--sigma", "0.12", "--denoiser", "none", "--n0", "8", "--n", "40",
            "--batch-size", "24", "--threads", "1", "--check-attack", "2", "--check-steps", "2", "--check-samples",
            "2")
    with sqlite3.connect(out / "results.sqlite") as connection:
        certified = connection.execute("SELECT COUNT(*) FROM certificates WHERE prediction >= 0").fetchone()[0]
        checks = connection.execute("SELECT radius, budget, l2, flipped FROM certificate_checks").fetchall()
    assert len(checks) == certified
    assert all(l2 <= budget < radius for radius, budget, l2, _ in checks)  # inside the radius, always
    text = (out / "certify.md").read_text()
    assert (("The certificates checked by attack" in text) == bool(checks))


COIN_MODULE = """
from torch import nn
from ciidefence import custom_classifier


class MeanSign(nn.Module):
    def forward(self, features):
        mean = features.mean((1, 2, 3))
        return __import__("torch").stack([mean, -mean], 1)


def make():
    body, head = nn.Identity(), MeanSign()
    return custom_classifier(nn.Sequential(body, head), body, head, input_size=32, mean=(0.5, 0.5, 0.5),
                             std=(1.0, 1.0, 1.0), name="coin", class_names=["bright", "dark"])
"""


def test_classify_smoothed_abstains_where_the_votes_split_from_the_command_line(tmp_path):
    import numpy as np
    from PIL import Image

    (tmp_path / "coin.py").write_text(COIN_MODULE)
    checkers = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)  # mean exactly 0.5: the noise decides
    Image.fromarray(np.stack([checkers] * 3, -1)).save(tmp_path / "split.png")
    Image.fromarray(np.full((32, 32, 3), 153, np.uint8)).save(tmp_path / "bright.png")  # 0.6: every draw says bright
    result = subprocess.run([*CIID, "classify", "split.png", "bright.png", "--model", "coin:make", "--defence",
                             "smoothed", "--smoothing-front", "none", "--smoothing-n0", "20", "--smoothing-n", "200",
                             "--threads", "1", "--json"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    split, bright = (entry["predictions"]["smoothed"][0] for entry in json.loads(result.stdout)["results"])
    assert (split["class"], split["name"], split["radius"]) == (ABSTAIN, "abstain", 0)
    assert 0.3 < split["probability"] < 0.7
    assert (bright["class"], bright["name"], bright["probability"]) == (0, "bright", 1.0)
    assert bright["radius"] == pytest.approx(0.25 * norm.ppf(0.001 ** (1 / 200)), rel=1e-5)


def test_the_report_compares_each_front_with_the_bare_classifier_image_by_image():
    from ciidefence.evaluation.certificates import CertificateRow
    from ciidefence.evaluation.certify_report import comparison_lines

    def row(image, front, right):
        return CertificateRow(image, 1, "m", f"s-{front}", 0.25, front, "{}", front, 100, 1000, 0.001, 1, 990, 0.98,
                              0.3 if right else 0.0, 1 if right else -1, int(right), 1.0)

    rows = [row(f"{i}.png", "learned", i < 16) for i in range(20)] + [row(f"{i}.png", "none", i < 4)
                                                                       for i in range(20)]
    table = comparison_lines(rows)
    line = next(text for text in table if text.startswith("| 0.25 | learned | 20 |"))
    cells = [cell.strip() for cell in line.split("|")[4:-1]]
    assert cells[0].startswith("+60.0 (") and cells[0].endswith("**")  # 16 against 4 at r = 0 and 0.25
    assert cells[2].startswith("+0.0 (") and not cells[2].endswith("**")  # nobody certified at r = 0.5
    assert comparison_lines([r for r in rows if r.front == "learned"]) == []  # no bare classifier to compare with
