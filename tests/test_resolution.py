"""Evaluating at each image's own resolution (``--resolution full``), beside the classifier's view."""

import json
import math
import shutil
import subprocess
import sys

import pytest
from PIL import Image

import ciidefence as cii
from conftest import BUNDLED_SAMPLE

EPS = 4 / 255
FIRST = ["n01440764_tench.JPEG", "n01820546_lorikeet.JPEG", "n02123159_tiger_cat.JPEG"]
"""Two images of 500 x 375 (batched together at full resolution) and one of 371 x 500."""


@pytest.fixture(scope="module")
def three_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("three")
    for name in FIRST:
        shutil.copy(BUNDLED_SAMPLE / name, folder / name)
    (folder / "labels.csv").write_text("".join(
        line + "\n" for line in (BUNDLED_SAMPLE / "labels.csv").read_text().splitlines()
        if line.startswith("file") or line.split(",")[0] in FIRST))
    return folder


@pytest.fixture(scope="module")
def runs(three_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    found = {}
    for resolution in ("view", "full", "full-then-view"):
        found[resolution] = cii.evaluate(data=three_images, out=out / resolution, defences=["none", "jpeg"],
                                         attacks=["fgsm"], eps=["4/255"], eval_draws=1, resolution=resolution)
    return out, found


def test_full_resolution_attacks_every_pixel_of_the_image_itself(runs):
    _, found = runs
    for resolution in ("view", "full"):
        attacked = [row for row in found[resolution] if row.attack == "fgsm" and row.defence == "none"]
        assert len(attacked) == 3
        for row in attacked:
            # FGSM moves by eps every value the classifier sees: at the view all 224 x 224 of it; at full
            # resolution the square its centre crop covers, 224/256 of the image's shorter side
            seen = 224 if resolution == "view" else 0.875 * min(Image.open(BUNDLED_SAMPLE / row.image).size)
            assert row.linf == pytest.approx(EPS, abs=1e-6)
            assert row.l2 == pytest.approx(EPS * math.sqrt(3) * seen, rel=0.05), (resolution, row.image)


def test_the_resolution_is_stored_reported_and_checked_on_resume(runs, three_images):
    out, _ = runs
    assert json.loads((out / "full" / "config.json").read_text())["resolution"] == "full"
    assert "Resolution: **full**" in (out / "full" / "summary.md").read_text()
    assert "Resolution: the classifier's view" in (out / "view" / "summary.md").read_text()
    result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "evaluate", "--data", str(three_images),
                             "--out", str(out / "full"), "--defences", "none,jpeg", "--attacks", "fgsm", "--eps",
                             "4/255", "--eval-draws", "1", "--no-sanity", "--resume"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "was made by a different configuration" in result.stderr, result.stderr


def test_report_compare_lines_up_the_two_resolutions(runs):
    out, _ = runs
    result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "report", str(out / "full"), "--compare",
                             str(out / "view")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "resolution full" in result.stdout and "resolution view" in result.stdout
    assert result.stdout.count("| jpeg |") == 2  # clean and FGSM, matched across the two resolutions


def test_an_unknown_resolution_is_one_line(three_images, tmp_path):
    with pytest.raises(cii.ConfigError, match="unknown resolution 'native'"):
        cii.evaluate(data=three_images, out=tmp_path / "x", resolution="native")
    assert not (tmp_path / "x").exists()


def test_a_stored_configuration_reads_back_as_the_run_was_made(runs):
    from ciidefence.evaluation.plan import RunConfig

    out, _ = runs
    stored = json.loads((out / "full" / "config.json").read_text())
    config = RunConfig.from_stored(stored)
    assert config.resolution == "full" and config.attacks == ("fgsm",) and json.loads(config.to_json()) == stored
    del stored["resolution"]  # a run folder from before the option: its default
    assert RunConfig.from_stored(stored).resolution == "view"
    with pytest.raises(cii.ConfigError, match="options this version does not know: colour"):
        RunConfig.from_stored({**stored, "colour": "blue"})


def test_full_then_view_attacks_the_image_and_defends_its_view(runs, three_images):
    import dataclasses

    import torch

    from ciidefence.evaluation import Evaluation, RunConfig

    out, found = runs
    full = {(row.image, row.defence, row.attack): row for row in found["full"]}
    mixed = {(row.image, row.defence, row.attack): row for row in found["full-then-view"]}
    for name in FIRST:
        assert mixed[(name, "none", "fgsm")].l2 == pytest.approx(full[(name, "none", "fgsm")].l2)  # the same attack
    stored = RunConfig.from_stored(json.loads((out / "full-then-view" / "config.json").read_text()))
    for resolution, side in (("full-then-view", 224), ("full", 500)):
        evaluation = Evaluation(dataclasses.replace(stored, resolution=resolution), torch.device("cpu"))
        _, groups = evaluation.readable_groups(evaluation.experiments[0], evaluation.batches()[0])
        batch, images = groups[0]
        assert images.shape[-1] == 500  # the attack works on the image itself
        assert evaluation.defence_input(images).shape[-1] == side
    with pytest.raises(cii.ConfigError, match="full-then-view takes gray-box and transfer threats"):
        cii.evaluate(data=three_images, out=three_images.parent / "bpda", resolution="full-then-view",
                     threat=["bpda"])


def test_the_dry_run_at_full_resolution_costs_defences_by_each_image_s_pixels(tmp_path):
    """The parts are timed on the first image's size; a run of larger images is costed larger, not as if every
    image were the first's size."""
    shutil.copy(BUNDLED_SAMPLE / FIRST[0], tmp_path / FIRST[0])  # 500 x 375
    Image.open(BUNDLED_SAMPLE / FIRST[0]).resize((1000, 750)).save(tmp_path / "z_large_tench.JPEG")
    tench = next(line for line in (BUNDLED_SAMPLE / "labels.csv").read_text().splitlines()
                 if line.startswith(FIRST[0]))
    (tmp_path / "labels.csv").write_text("file,class_index,wnid,class_name\n" + tench + "\n"
                                         + tench.replace(FIRST[0], "z_large_tench.JPEG") + "\n")
    printed = {}
    for resolution in ("full", "view"):
        result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "evaluate", "--data", str(tmp_path),
                                 "--out", str(tmp_path / resolution), "--defences", "none,jpeg", "--attacks", "fgsm",
                                 "--eps", "4/255", "--no-sanity", "--resolution", resolution, "--dry-run"],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        printed[resolution] = result.stdout
    assert "multiplied by 2.50, the run's mean pixels per image" in printed["full"]  # (1 + 4) / 2
    assert "multiplied by" not in printed["view"]
