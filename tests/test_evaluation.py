"""The evaluation harness on a few real images with the real embedded model."""

import itertools
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from ciidefence import CIIDefence, ConfigError
from ciidefence.attacks import attack_params, format_eps, parse_eps
from ciidefence.defences.art import ARTPreprocessor
from ciidefence.evaluation import load_dataset, wilson_interval
from ciidefence.evaluation.cells import Cell, pivot
from ciidefence.evaluation.checks import sanity_checks
from ciidefence.evaluation.summary import at_a_glance
from conftest import BUNDLED_SAMPLE, REPO

PYTHON_CIID = [sys.executable, "-m", "ciidefence.cli.main"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    for path in sorted(BUNDLED_SAMPLE.glob("*.JPEG")):
        shutil.copy(path, folder / path.name)
    shutil.copy(BUNDLED_SAMPLE / "labels.csv", folder / "labels.csv")
    return folder


def evaluate(data_dir, out, *extra, check=True):
    args = [*PYTHON_CIID, "evaluate", "--data", str(data_dir), "--out", str(out), *map(str, extra)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def table_rows(run_dir):
    with sqlite3.connect(run_dir / "results.sqlite") as connection:
        rows = connection.execute(
            "SELECT image, defence, attack, attack_params, eps_label, threat, pred_clean, pred_clean_defended, "
            "pred_adv, pred_defended_adv, l2, linf FROM results ORDER BY image, defence, attack, eps_label, threat"
        ).fetchall()
    return rows


def evaluate_killed_after(data_dir, out, options, rows, signum=signal.SIGKILL):
    """Start ``ciid evaluate``, send it ``signum`` once more than ``rows`` rows are written, and return the rows.

    The run's exit status and stderr are left in ``out.with_suffix(".exit")`` and ``out.with_suffix(".stderr")``.
    """
    stderr = out.with_suffix(".stderr")
    with stderr.open("w") as errors:
        process = subprocess.Popen([*PYTHON_CIID, "evaluate", "--data", str(data_dir), "--out", str(out), *options],
                                   stdout=subprocess.DEVNULL, stderr=errors)
        written = 0
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None and written <= rows:
            if (out / "results.sqlite").exists():
                try:
                    with sqlite3.connect(out / "results.sqlite", timeout=1) as connection:
                        written = connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                except sqlite3.OperationalError:
                    written = 0
            time.sleep(0.02)
        os.kill(process.pid, signum)
        out.with_suffix(".exit").write_text(str(process.wait(timeout=120)))
    return table_rows(out)


SMALL = ["--limit", "4", "--batch-size", "2", "--attacks", "fgsm,pgd", "--attack-param", "pgd.max_iter=2",
         "--no-sanity"]


def test_evaluate_writes_every_outcome_and_the_summaries(data_dir, tmp_path):
    out = tmp_path / "run"
    result = evaluate(data_dir, out, *SMALL, "--threat", "graybox,bpda")
    assert "| defence | clean |" in result.stdout and "# Evaluation summary" not in result.stdout  # the short table
    assert "sanity: NOT RUN" in result.stdout and "--no-sanity" in result.stdout
    rows = table_rows(out)
    # clean 4 x 2 defences; gray-box 2 attacks x 2 eps x 2 defences x 4; BPDA 2 x 2 x 3 approximations x 4
    # (the default inpainter, DeepFill, is differentiable: BPDA through it is the third approximation)
    assert len(rows) == 8 + 32 + 48
    assert {r[5] for r in rows} == {"clean", "graybox", "bpda"}
    assert all(r[11] <= 2 / 255 + 1e-6 for r in rows if r[4] == "2/255")
    summary = json.loads((out / "summary.json").read_text())
    cells = {(c["defence"], c["attack"], c["eps_label"], c["threat"]): c for c in summary["cells"]
             if c["approximation"] is None}
    assert cells[("none", "clean", "-", "clean")]["images"] == 4
    assert cells[("none", "pgd", "4/255", "graybox")]["accuracy"] <= cells[("none", "clean", "-", "clean")]["accuracy"]
    for name in ("summary.md", "summary.csv", "accuracy_vs_eps.png", "config.json"):
        assert (out / name).stat().st_size > 0
    # the paper's convention beside ours: only the images the undefended model gets right, attacks in rows
    labels = dict(line.split(",")[:2] for line in (data_dir / "labels.csv").read_text().splitlines()[1:])
    right = {r[0] for r in rows if r[5] == "clean" and r[1] == "none" and r[6] == int(labels[r[0]])}
    paper = (out / "summary.md").read_text().split("laid out as Pixel Deflection's Table 1")[1].split("\n## ")[0]
    assert f"Only the {len(right)} of 4 images" in paper
    assert "| attack | none | ciid |" in paper and "| clean | 100.0% |" in paper
    assert "| FGSM 4/255 graybox (nl2 0.0" in paper

    for name in ("summary.md", "summary.json"):
        (out / name).unlink()
    report = subprocess.run([*PYTHON_CIID, "report", str(out)], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert json.loads((out / "summary.json").read_text())["cells"] == summary["cells"]


def test_progress_counts_only_the_current_plans_batches(tmp_path):
    from ciidefence.evaluation import ResultStore
    from ciidefence.evaluation.run_folder import read_run

    with ResultStore(tmp_path / "results.sqlite") as store:
        store.set_meta("config", json.dumps({"model": "m"}))
        store.set_meta("units_total", "2")
        for experiment in ("old-plan", "new-plan"):
            store.write([], unit=("m", experiment, 0))
        assert read_run(tmp_path).units_done == 2  # a database from before plans were recorded: every batch
        store.record_planned_experiments("m", ["new-plan", "new-plan-2"])
    run = read_run(tmp_path)
    assert run.units_done == 1 and not run.complete


def test_resume_after_sigkill_matches_an_uninterrupted_run(data_dir, tmp_path):
    # two PGD steps are enough: what is checked is that the random starts and the units survive the kill
    options = ["--limit", "4", "--batch-size", "1", "--attacks", "pgd", "--attack-param", "pgd.max_iter=2",
               "--defences", "none,ciid", "--no-sanity"]
    reference = tmp_path / "reference"
    evaluate(data_dir, reference, *options)
    expected = table_rows(reference)
    assert len(expected) == 4 * 2 * 3

    killed = tmp_path / "killed"
    partial = evaluate_killed_after(data_dir, killed, options, rows=8)  # the clean rows and some attacked batches
    assert 8 < len(partial) < len(expected), "the run was not killed partway"

    plan = evaluate(data_dir, killed, *options, "--resume", "--dry-run").stdout
    lines = [line for line in plan.splitlines() if "images left" in line]
    left = [(line.split()[0], int(re.search(r"\((\d+) of 4 images left\)", line).group(1))) for line in lines]
    assert [n for name, n in left if name == "clean"] == [0] and "estimated time left" in plan
    assert 0 < sum(n for name, n in left if name == "pgd") < 8  # two budgets, partly written
    # an experiment with rows is timed by its own seconds per image, the others by the measured parts
    assert [line.endswith("measured") for line in lines] == [n < 4 for _, n in left]
    assert "of it from the seconds per image this run measured" in plan

    archive = [sys.executable, str(REPO / "benchmarks" / "tables" / "archive.py")]
    moved = tmp_path / "moved"  # packed into the repository, unpacked on another machine
    for step in (["pack", killed, tmp_path / "packed"], ["unpack", tmp_path / "packed", moved]):
        result = subprocess.run([*archive, *map(str, step)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    assert not (tmp_path / "packed" / "summary.md").exists()  # intermediate packs carry no summaries or figures
    result = subprocess.run([*archive, "pack", "--final", str(killed), str(tmp_path / "final")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "Incomplete" in (tmp_path / "final" / "summary.md").read_text()

    evaluate(data_dir, killed, *options, "--resume")
    assert table_rows(killed) == expected  # nothing lost, nothing duplicated, same outcomes
    evaluate(data_dir, moved, *options, "--resume")
    assert table_rows(moved) == expected


def test_a_run_folder_is_never_overwritten(data_dir, tmp_path):
    out = tmp_path / "run"
    evaluate(data_dir, out, *SMALL, "--threat", "graybox", "--defences", "none")
    before = table_rows(out)
    again = evaluate(data_dir, out, *SMALL, "--defences", "none", check=False)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    other = evaluate(data_dir, out, *SMALL, "--defences", "none", "--eps", "8/255", "--resume", check=False)
    assert other.returncode == 2 and "different configuration" in other.stderr
    assert table_rows(out) == before


@pytest.mark.parametrize("extra,message", [
    (["--attacks", "magic"], "unknown attack 'magic'"),
    (["--defences", "none,shield"], "unknown defence 'shield'"),
    (["--eps", "abc"], "not a finite number or fraction"),
    (["--eps", "2/0"], "not a finite number or fraction"),
    (["--eps", "3"], "must lie in (0, 1]"),
    (["--threat", "blackbox"], "unknown threat model"),
    (["--attack-param", "pgd.speed=3"], "no parameter 'speed'"),
    (["--attack-param", "pgd.max_iter=ten"], "must be a int"),
    (["--resume"], "nothing to resume"),
])
def test_bad_evaluation_options(data_dir, tmp_path, extra, message):
    result = evaluate(data_dir, tmp_path / "run", "--limit", "2", *extra, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "results.sqlite").exists()


def test_bad_data_folders(tmp_path, data_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "labels.csv").write_text("file,class_index\n")
    with pytest.raises(ConfigError, match="holds no images"):
        load_dataset(empty)
    mismatched = tmp_path / "mismatched"
    shutil.copytree(data_dir, mismatched)
    (mismatched / "labels.csv").write_text("file,class_index\nnot_here.jpg,3\n")
    with pytest.raises(ConfigError, match="labelled but not in the folder"):
        load_dataset(mismatched)
    result = evaluate(mismatched, tmp_path / "run", check=False)
    assert result.returncode == 2 and "labelled but not in the folder" in result.stderr


def test_imagenet_folder_layout(tmp_path):
    for wnid in ("n01440764", "n01820546"):
        (tmp_path / wnid).mkdir()
        image = next(BUNDLED_SAMPLE.glob(f"{wnid}_*.JPEG"))
        shutil.copy(image, tmp_path / wnid / image.name)
    found = load_dataset(tmp_path)
    assert [(item.key.split("/")[0], item.label) for item in found] == [("n01440764", 0), ("n01820546", 90)]
    (tmp_path / "holiday").mkdir()
    with pytest.raises(ConfigError, match="not an ImageNet WordNet id"):
        load_dataset(tmp_path)


def test_dry_run_prints_a_plan_and_runs_nothing(data_dir, tmp_path):
    result = evaluate(data_dir, tmp_path / "run", "--limit", "2", "--attacks", "fgsm,deepfool", "--threat",
                      "graybox,bpda", "--dry-run")
    assert "estimated total" in result.stdout and "deepfool unbounded bpda-identity on ciid" in result.stdout
    assert not (tmp_path / "run").exists()


def test_art_preprocessor_forward_is_real_and_backward_is_the_approximation(classifier, photo):
    image = classifier.prepare(photo)
    defence = CIIDefence(classifier)
    for approximation in ("identity", "differentiable"):
        preprocessor = ARTPreprocessor(defence, approximation)
        leaf = image.clone().requires_grad_(True)
        output, _ = preprocessor.forward(leaf)
        assert torch.equal(output.detach(), defence(image))
        weights = torch.rand_like(image)
        (output * weights).sum().backward()
        estimate = leaf.detach().clone().requires_grad_(True)
        (preprocessor.estimate_forward(estimate) * weights).sum().backward()
        assert torch.allclose(leaf.grad, estimate.grad)
        if approximation == "identity":
            assert torch.equal(leaf.grad, weights)
        else:
            assert not torch.allclose(leaf.grad, weights)


@pytest.mark.parametrize("per_image", [False, True])
def test_bpda_on_a_randomised_defence_differentiates_the_transformation_it_applied(classifier, photo, per_image):
    from ciidefence.defences import RandomResizePad
    from ciidefence.defences.transforms import random_resize_pad
    from ciidefence.randomness import seeded_generator

    images = classifier.prepare(photo).repeat(2, 1, 1, 1)
    defence = RandomResizePad()

    def generators():
        return [seeded_generator(0, i) for i in range(2)] if per_image else seeded_generator(0)

    preprocessor = ARTPreprocessor(defence, "differentiable", generator=generators())
    leaf = images.clone().requires_grad_(True)
    output, _ = preprocessor.forward(leaf)
    weights = torch.rand_like(images)
    (output * weights).sum().backward()

    exact = images.clone().requires_grad_(True)
    applied = random_resize_pad(exact, defence.max_ratio, generators())  # the same draws, differentiated
    (applied * weights).sum().backward()
    assert torch.equal(output.detach(), applied.detach())
    assert torch.allclose(leaf.grad, exact.grad)

    again, _ = preprocessor.forward(images.clone().requires_grad_(True))  # the next EOT sample draws afresh
    assert not torch.equal(again.detach(), output.detach())


def test_attack_parameters_and_budgets():
    assert attack_params("pgd") == {"max_iter": 10, "step_ratio": 0.25, "restarts": 1}
    assert attack_params("cw", {"binary_search_steps": "3"})["binary_search_steps"] == 3
    assert parse_eps("8/255") == pytest.approx(8 / 255) and format_eps(parse_eps("8/255")) == "8/255"
    assert parse_eps("2.5", upper=float("inf")) == 2.5
    assert attack_params("cw", {"confidence": "0"})["confidence"] == 0
    assert attack_params("pgd", {"restarts": "0"})["restarts"] == 0  # no random start: I-FGSM


@pytest.mark.parametrize(("attack", "key", "value"), [
    ("pgd", "max_iter", "-5"), ("pgd", "restarts", "-1"), ("apgd-ce", "restarts", "0"), ("pgd", "step_ratio", "nan"),
    ("apgd-ce", "step_ratio", "inf"), ("cw", "learning_rate", "-0.1"), ("square", "p_init", "1.5"),
    ("deepfool", "overshoot", "-1"),
])
def test_attack_parameters_out_of_range_are_refused_before_anything_runs(attack, key, value):
    with pytest.raises(ConfigError, match=f"{attack}.{key} must be a finite"):
        attack_params(attack, {key: value})


def test_a_bad_attack_parameter_writes_no_run_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "evaluate", "--data",
                             str(REPO / "samples"), "--labels", str(REPO / "samples" / "labels.csv"), "--attacks",
                             "pgd", "--attack-param", "pgd.max_iter=-5", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "pgd.max_iter must be a finite, positive number" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_wilson_interval():
    low, high = wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-3)
    low, high = wilson_interval(45, 100)
    assert low == pytest.approx(0.3561, abs=1e-3) and high == pytest.approx(0.5476, abs=1e-3)
    assert all(wilson_interval(0, n)[0] == 0 and wilson_interval(n, n)[1] == 1 for n in range(1, 501))


def test_the_eps_plot_draws_a_defence_attacked_at_a_single_budget_with_error_bars(tmp_path):
    from ciidefence.evaluation.figures import eps_figure, plot

    attacked = cell("ciid", "pgd", 4 / 255, "bpda-inpainter", 0.0)
    other_variant = cell("ciid", "pgd", 4 / 255, "bpda-inpainter", 0.02, params='{"max_iter":50}')
    table = [replace(cell("ciid", "clean", None, "clean", 0.755), ci_low=0.69, ci_high=0.81),
             replace(attacked, images=88, correct=0, ci_low=wilson_interval(0, 88)[0],
                     ci_high=wilson_interval(0, 88)[1]), other_variant]
    plot(table, tmp_path / "accuracy_vs_eps.png")
    assert (tmp_path / "accuracy_vs_eps.png").stat().st_size > 0
    drawn = [line for axis in eps_figure(table).axes for line in axis.get_lines()]
    assert drawn and all(line.get_linestyle() == "None" for line in drawn)  # markers and caps, no line from clean


def test_the_eps_plot_gives_normalised_l2_budgets_their_own_panel_and_axis():
    from ciidefence.evaluation.figures import eps_figure

    table = [cell(defence, "clean", None, "clean", 0.9) for defence in ("none", "ciid")]
    for defence in ("none", "ciid"):
        table += [cell(defence, "pgd", eps, "graybox", 0.5) for eps in (2 / 255, 4 / 255)]
        table += [replace(cell(defence, "pgd-l2", eps, "graybox", 0.4), budget="nl2") for eps in (0.02, 0.05)]
    axes = [axis for axis in eps_figure(table).axes if axis.get_visible()]
    by_label = {axis.get_xlabel(): axis for axis in axes}
    assert len(axes) == 2 and set(by_label) == {"eps (L-inf, x/255)", "eps (normalised L2, ||d||/||x||)"}
    l2_xs = {tuple(line.get_xdata()) for line in by_label["eps (normalised L2, ||d||/||x||)"].get_lines()}
    linf_xs = {tuple(line.get_xdata()) for line in by_label["eps (L-inf, x/255)"].get_lines()}
    assert l2_xs == {(0.0, 0.02, 0.05)} and linf_xs == {(0.0, 2.0, 4.0)}


def test_the_eps_plot_draws_each_parameter_variant_of_an_attack_in_its_own_panel():
    from ciidefence.evaluation.figures import eps_figure

    table = [cell("ciid", "clean", None, "clean", 0.8)]
    table += [cell("ciid", "pgd", eps, "graybox", 0.5, params=f'{{"max_iter":10,"restarts":{restarts}}}')
              for eps in (2 / 255, 4 / 255) for restarts in (0, 1)]
    table.append(cell("ciid", "pgd", 8 / 255, "graybox", 0.1, params='{"max_iter":10,"restarts":1}'))
    axes = [axis for axis in eps_figure(table).axes if axis.get_visible()]
    xs = {axis.get_title(): [list(line.get_xdata()) for line in axis.get_lines()] for axis in axes}
    assert xs == {"PGD (L-inf), graybox (restarts=0)": [[0.0, 2.0, 4.0]],
                  "PGD (L-inf), graybox (restarts=1)": [[0.0, 2.0, 4.0, 8.0]]}  # no x drawn twice in a line


def cell(defence, attack, eps, threat, accuracy, params='{"max_iter":10}', purpose="main"):
    threat, _, approximation = threat.partition("-")
    return Cell("m", defence, "h", f"{attack}{eps}{threat}{purpose}", purpose, attack, params, eps, format_eps(eps),
                threat, approximation or None, 100, 0, int(100 * accuracy), accuracy, 0, 1, 0, 0, 0, 0, 0)


def transferred(defence, attack, eps, accuracy, source="lite2"):
    """A cell of ``attack`` made on ``source`` and scored on the run's model behind ``defence``."""
    return replace(cell(defence, attack, eps, "graybox", accuracy), threat="transfer", source=source)


def test_one_attack_setting_run_with_two_parameter_sets_gets_two_columns():
    old, new = '{"max_iter":20}', '{"max_iter":20,"version":2}'
    table = [cell("none", "deepfool", None, "graybox", 0.084, old), cell("none", "deepfool", None, "graybox", 0.0, new),
             cell("ciid", "deepfool", None, "graybox", 0.70, new), cell("none", "fgsm", 2 / 255, "graybox", 0.2)]
    rows, columns, values, _ = pivot(table)
    assert columns == [("deepfool", "-", "graybox", "no version"), ("deepfool", "-", "graybox", "version=2"),
                       ("fgsm", "2/255", "graybox")]
    assert values[("none", 0)].accuracy == 0.084 and values[("none", 1)].accuracy == 0.0
    assert ("ciid", 0) not in values and values[("ciid", 1)].accuracy == 0.70
    glance = "\n".join(at_a_glance(table))
    assert "DeepFool graybox (no version)" in glance and "DeepFool graybox (version=2)" in glance
    minimum_norm = {c.name: c for c in sanity_checks(table)}["minimum-norm attacks leave the undefended model at <= 5%"]
    assert minimum_norm.status == "FLAG" and minimum_norm.detail.startswith("deepfool/graybox (no version): 8.4%")


def test_sanity_checks_flag_a_rise_with_eps_and_a_weak_iterative_attack():
    table = [
        cell("none", "fgsm", 2 / 255, "graybox", 0.20), cell("none", "fgsm", 4 / 255, "graybox", 0.25),
        cell("none", "pgd", 2 / 255, "graybox", 0.30), cell("none", "pgd", 4 / 255, "graybox", 0.10),
        cell("ciid", "fgsm", 2 / 255, "graybox", 0.50), cell("ciid", "pgd", 2 / 255, "graybox", 0.70),
    ]
    checks = {c.name: c for c in sanity_checks(table)}
    assert checks["accuracy does not rise with eps"].status == "FLAG"
    assert "none/fgsm/graybox" in checks["accuracy does not rise with eps"].detail
    iterative = checks["iterative attacks do at least as well as FGSM"]
    assert iterative.status == "FLAG" and "none/graybox/2/255" in iterative.detail
    assert "ciid" not in iterative.detail  # gray-box on a defended model did not target it
    assert checks["minimum-norm attacks leave the undefended model at <= 5%"].status == "NOT RUN"

    weak = [cell("none", "deepfool", None, "graybox", 0.02), cell("none", "cw", None, "graybox", 0.43),
            cell("jpeg", "cw", None, "graybox", 0.90)]
    minimum_norm = {c.name: c for c in sanity_checks(weak)}["minimum-norm attacks leave the undefended model at <= 5%"]
    assert minimum_norm.status == "FLAG" and "cw/graybox: 43.0%" in minimum_norm.detail
    assert "deepfool" not in minimum_norm.detail and "90" not in minimum_norm.detail
    strong = {c.name: c for c in sanity_checks(weak[:1])}["minimum-norm attacks leave the undefended model at <= 5%"]
    assert strong.status == "PASS"
    assert checks["undefended model falls to <= 1% under PGD-20 at 8/255"].status == "NOT RUN"


def test_sanity_checks_leave_out_transfer_where_the_attacker_targeted_another_model():
    # the undefended rows of a transfer run (lite2 -> lite0): I-FGSM transfers worse than FGSM, and a
    # minimum-norm attack made on lite2 leaves most of lite0 right; neither says lite0's attack is weak
    table = [transferred("none", "fgsm", 2 / 255, 0.746), transferred("none", "bim", 2 / 255, 0.782),
             transferred("none", "fgsm", 4 / 255, 0.684), transferred("none", "pgd", 2 / 255, 0.60),
             transferred("none", "pgd", 4 / 255, 0.65), transferred("none", "cw", None, 0.86)]
    checks = {c.name: c for c in sanity_checks(table)}
    assert checks["iterative attacks do at least as well as FGSM"].status == "NOT RUN"
    assert checks["accuracy does not rise with eps"].status == "NOT RUN"
    assert checks["minimum-norm attacks leave the undefended model at <= 5%"].status == "NOT RUN"

    graybox = [cell("none", "fgsm", 2 / 255, "graybox", 0.20), cell("none", "bim", 2 / 255, "graybox", 0.30)]
    checks = {c.name: c for c in sanity_checks(table + graybox)}
    iterative = checks["iterative attacks do at least as well as FGSM"]
    assert iterative.status == "FLAG" and iterative.detail.startswith("none/graybox/2/255: bim 30.0%")
    assert "transfer" not in iterative.detail


def test_heat_map_names_a_threat_shared_by_every_column_once_in_its_title():
    from ciidefence.evaluation.figures import table_figure

    table = [cell("none", "clean", None, "clean", 0.89), transferred("none", "fgsm", 4 / 255, 0.68),
             transferred("none", "cw", None, 0.88), transferred("ciid", "fgsm", 4 / 255, 0.67)]
    axis = table_figure(table).axes[0]
    assert "every attack transfer-from-lite2" in axis.get_title()
    assert [t.get_text() for t in axis.get_xticklabels()] == ["clean", "fgsm\n4/255", "cw"]

    mixed = table + [cell("none", "fgsm", 4 / 255, "graybox", 0.2)]
    axis = table_figure(mixed).axes[0]
    assert "every attack" not in axis.get_title()
    assert "fgsm\n4/255\ntransfer-from-lite2" in [t.get_text() for t in axis.get_xticklabels()]


def test_heat_map_column_labels_do_not_overlap():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ciidefence.evaluation.figures import table_figure

    table = [cell("none", "clean", None, "clean", 0.89)] + [
        cell("ciid", attack, 4 / 255, f"bpda-{approximation}", 0.0)
        for approximation in ("differentiable", "identity", "inpainter") for attack in ("apgd-ce", "apgd-dlr")]
    figure = table_figure(table)
    renderer = FigureCanvasAgg(figure).get_renderer()
    boxes = [label.get_window_extent(renderer) for label in figure.axes[0].get_xticklabels()]
    assert len(boxes) == 7
    assert all(left.x1 < right.x0 for left, right in itertools.pairwise(boxes))


def test_plan_keeps_threat_models_apart_and_limits_bpda_to_chosen_attacks():
    from ciidefence.evaluation import RunConfig

    config = RunConfig(data="d", labels=None, model="m", checkpoint=None, random_weights=False,
                       defences=("none", "ciid"), ciid={}, attacks=("fgsm", "pgd", "deepfool"),
                       threats=("graybox", "bpda"), bpda_attacks=("pgd",), eps=(2 / 255, 4 / 255))
    experiments = config.experiments()
    described = [e.describe() for e in experiments]
    assert described[0] == "clean"
    assert "deepfool unbounded graybox" in described
    assert sum(e.threat == "bpda" for e in experiments) == 2 * 3  # pgd x 2 eps x 3 approximations (DeepFill)
    assert all(e.attack == "pgd" and e.target == "ciid" for e in experiments if e.threat == "bpda")
    assert [e.purpose for e in experiments].count("sanity") == 2
    with pytest.raises(ConfigError, match="not among --attacks"):
        RunConfig(data="d", labels=None, model="m", checkpoint=None, random_weights=False, defences=("none",),
                  ciid={}, attacks=("fgsm",), bpda_attacks=("cw",))


def test_plan_gives_each_defence_only_the_approximations_it_has_and_the_chosen_bpda_budgets():
    from ciidefence.evaluation import RunConfig

    config = RunConfig(data="d", labels=None, model="m", checkpoint=None, random_weights=False,
                       defences=("none", "ciid", "jpeg", "random-resize-pad"), ciid={"inpainter": "telea"},
                       attacks=("pgd",), threats=("graybox", "bpda"), eps=(2 / 255, 4 / 255), bpda_eps=(4 / 255,),
                       sanity=False)
    bpda = {(e.target, e.threat_label, e.eps_label) for e in config.experiments() if e.threat == "bpda"}
    # Telea is not differentiable: no "inpainter" approximation for CIIDefence here
    assert bpda == {("ciid", "bpda-identity", "4/255"), ("ciid", "bpda-differentiable", "4/255"),
                    ("jpeg", "bpda-identity", "4/255"), ("random-resize-pad", "bpda-identity", "4/255"),
                    ("random-resize-pad", "bpda-differentiable", "4/255")}
    with pytest.raises(ConfigError, match="unknown defence"):
        RunConfig(data="d", labels=None, model="m", checkpoint=None, random_weights=False,
                  defences=("none", "quilting"), ciid={}, attacks=("pgd",))


def test_paper_preset_plans_every_defence_and_keeps_options_given(data_dir, tmp_path):
    result = evaluate(data_dir, tmp_path / "run", "--preset", "paper", "--limit", "1", "--eot", "2",
                      "--attacks", "fgsm,pgd", "--dry-run")
    for name in ("ciid-random-boxes", "pixel-deflection", "tvm", "random-resize-pad"):
        assert f"pgd eps 4/255 bpda-identity on {name}" in result.stdout
    assert "pgd eps 2/255 bpda" not in result.stdout
    assert "deepfool" not in result.stdout  # --attacks given, so the preset's list is not used


OLD_SCHEMA = """
CREATE TABLE results (
    image TEXT NOT NULL, label INTEGER NOT NULL, model TEXT NOT NULL, defence TEXT NOT NULL,
    defence_config TEXT NOT NULL, defence_hash TEXT NOT NULL, attack TEXT NOT NULL, attack_params TEXT NOT NULL,
    eps REAL, eps_label TEXT NOT NULL, threat TEXT NOT NULL, pred_clean INTEGER NOT NULL,
    pred_clean_defended INTEGER NOT NULL, pred_adv INTEGER NOT NULL, pred_defended_adv INTEGER NOT NULL,
    l2 REAL NOT NULL, linf REAL NOT NULL, seconds REAL NOT NULL,
    UNIQUE (image, model, defence_hash, attack, attack_params, eps_label, threat)
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
SANITY = '{"max_iter":20,"restarts":0,"step_ratio":0.25}'


def test_a_database_from_before_experiment_identities_migrates(tmp_path):
    """The first release stored no purpose, spelled BPDA as 'bpda-<approximation>' and had no defence times."""
    from ciidefence.evaluation.run_folder import read_run

    with sqlite3.connect(tmp_path / "results.sqlite") as connection:
        connection.executescript(OLD_SCHEMA)
        old_rows = [
            ("none", "clean", "{}", None, "-", "clean"),
            ("none", "pgd", SANITY, 8 / 255, "8/255", "graybox"),
            ("none", "pgd", SANITY, 2 / 255, "2/255", "graybox"),  # a user's PGD-20: not a sanity row
            ("ciid", "pgd", SANITY, 4 / 255, "4/255", "bpda-differentiable"),
        ]
        for defence, attack, params, eps, label, threat in old_rows:
            connection.execute("INSERT INTO results VALUES ('a.jpg', 1, 'm', ?, '{}', ?, ?, ?, ?, ?, ?, 1, 1, 1, 1, "
                               "0, 0, 0.5)", (defence, defence, attack, params, eps, label, threat))
    run = read_run(tmp_path)
    rows = {(r.eps_label, r.threat): r for r in run.rows}
    assert len(rows) == 4 and all(r.defence_ms == 0 for r in run.rows)
    assert rows[("8/255", "graybox")].purpose == "sanity"
    assert rows[("2/255", "graybox")].purpose == "main"
    bpda = rows[("4/255", "bpda")]
    assert (bpda.approximation, bpda.target) == ("differentiable", "ciid")
    assert len({r.experiment for r in run.rows}) == 4
    assert read_run(tmp_path).rows == run.rows  # migrating is done once


def test_bpda_through_the_inpainter_is_planned_only_for_torch_native_inpainters():
    from ciidefence.evaluation import RunConfig

    def planned(inpainter):
        config = RunConfig(data="d", labels=None, model="m", checkpoint=None, random_weights=False,
                           defences=("ciid", "ciid-denoise-only"), ciid={"inpainter": inpainter}, attacks=("pgd",),
                           threats=("bpda",), eps=(4 / 255,), sanity=False)
        return {(e.target, e.approximation) for e in config.experiments() if e.threat == "bpda"}

    assert ("ciid", "inpainter") in planned("deepfill") and ("ciid", "inpainter") in planned("harmonic")
    assert ("ciid", "inpainter") not in planned("telea")
    assert ("ciid-denoise-only", "inpainter") not in planned("deepfill")  # no boxes, nothing to inpaint


def test_the_paper_protocol_attacks_and_scores_only_images_classified_right(data_dir, tmp_path):
    out = tmp_path / "run"
    evaluate(data_dir, out, "--limit", "8", "--attacks", "fgsm", "--eps", "4/255", "--no-sanity",
             "--defences", "none,jpeg", "--protocol", "paper")
    with sqlite3.connect(out / "results.sqlite") as connection:
        rows = connection.execute("SELECT image, label, pred_clean, l2 FROM results WHERE attack='fgsm' "
                                  "AND defence='none'").fetchall()
    right = {image for image, label, pred, _ in rows if pred == label}
    assert 0 < len(right) < 8  # the bundled samples hold images the model gets wrong
    assert all((l2 > 0) == (image in right) for image, _, _, l2 in rows)  # the others are not attacked
    summary = json.loads((out / "summary.json").read_text())
    assert {c["images"] for c in summary["cells"]} == {len(right)}
    clean = next(c for c in summary["cells"] if c["defence"] == "none" and c["threat"] == "clean")
    assert clean["accuracy"] == 1.0
    summary_md = (out / "summary.md").read_text()
    assert f"only the {len(right)} of 8 images" in summary_md
    assert not re.search(r"[\d%] †", summary_md)  # images left unscored by the protocol do not make a cell short


def test_a_run_folder_from_before_new_options_still_matches_its_configuration():
    from ciidefence.evaluation import RunConfig

    config = RunConfig(data="d", labels=None, model="m", checkpoint=None, random_weights=False,
                       defences=("none",), ciid={}, attacks=("fgsm",))
    older = json.loads(config.to_json())
    del older["protocol"], older["max_pixels"]  # written before these options existed
    assert config.matches(json.dumps(older))
    other = RunConfig(**{**config.__dict__, "protocol": "paper"})
    assert not other.matches(json.dumps(older))


def test_the_paired_difference_interval_covers_and_is_narrower_than_the_independent_one():
    import random

    from ciidefence.evaluation.intervals import paired_difference_interval

    def independent(right_a, right_b, total):  # Newcombe's hybrid score interval for two independent samples
        (low_a, high_a), (low_b, high_b) = wilson_interval(right_a, total), wilson_interval(right_b, total)
        p_a, p_b = right_a / total, right_b / total
        return (p_a - p_b - math.hypot(p_a - low_a, high_b - p_b), p_a - p_b + math.hypot(high_a - p_a, p_b - low_b))

    # Two defences on the same 100 images, mostly right on the same ones: A 60%, B 50%.
    rng, covered, paired_width, independent_width = random.Random(0), 0, 0.0, 0.0
    for _ in range(2000):
        counts = [0, 0, 0, 0]  # both, only A, only B, neither
        for _ in range(100):
            draw = rng.random()
            counts[0 if draw < 0.45 else 1 if draw < 0.60 else 2 if draw < 0.65 else 3] += 1
        low, high = paired_difference_interval(*counts)
        covered += low <= 0.1 <= high
        paired_width += high - low
        low, high = independent(counts[0] + counts[1], counts[0] + counts[2], 100)
        independent_width += high - low
    assert covered / 2000 >= 0.93
    assert paired_width < 0.8 * independent_width
    low, high = paired_difference_interval(50, 0, 0, 50)  # the same outcome on every image
    assert low == pytest.approx(-high) and 0 < high < 0.03
    low, high = paired_difference_interval(50, 3, 1, 46)  # 53% against 51%: not told apart
    assert low < 0 < high
    assert all(math.isnan(bound) for bound in paired_difference_interval(0, 0, 0, 0))  # no images


def test_report_compares_two_runs_side_by_side(data_dir, tmp_path):
    common = ["--limit", "4", "--attacks", "fgsm", "--eps", "4/255", "--no-sanity"]
    evaluate(data_dir, tmp_path / "a", *common, "--defences", "none,jpeg")
    evaluate(data_dir, tmp_path / "b", *common, "--defences", "none,median")
    result = subprocess.run([*PYTHON_CIID, "report", str(tmp_path / "a"), "--compare", str(tmp_path / "b")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in result.stdout.splitlines()
            if line.startswith("| none")]
    assert [(row[1], row[2]) for row in rows] == [("clean", "clean"), ("graybox", "FGSM")]  # matched by identity
    assert all(row[7].startswith("+0.0 (") and row[8] == "no" for row in rows)  # the same model, the same images
    assert "Only in A: jpeg " in result.stdout and "Only in B: median " in result.stdout
    assert "| jpeg" not in result.stdout and "| median" not in result.stdout  # no half-empty rows
    assert (tmp_path / "a" / "compare.md").read_text().strip() == result.stdout.strip()
    evaluate(data_dir, tmp_path / "c", *common[:1], "2", *common[2:], "--defences", "none,jpeg")
    fewer = subprocess.run([*PYTHON_CIID, "report", str(tmp_path / "c"), "--compare", str(tmp_path / "a")],
                           capture_output=True, text=True, timeout=120)
    assert "on the images both hold (2; A holds 2, B 4)" in fewer.stdout
    assert fewer.stdout.count("(n=2)") == 2 * 2 * 2  # clean and FGSM for none and jpeg, A and B: the same 2 images


def test_normalised_l2_budgets_size_each_images_perturbation_by_its_own_norm(data_dir, tmp_path):
    out = tmp_path / "run"
    evaluate(data_dir, out, "--limit", "4", "--attacks", "fgsm-l2", "--eps-l2", "1", "--eps-nl2", "0.03",
             "--defences", "none", "--no-sanity")
    with sqlite3.connect(out / "results.sqlite") as connection:
        rows = connection.execute("SELECT budget, l2, nl2 FROM results WHERE attack='fgsm-l2'").fetchall()
    relative = [nl2 for budget, _, nl2 in rows if budget == "nl2"]
    absolute = [l2 for budget, l2, _ in rows if budget == "absolute"]
    assert len(relative) == len(absolute) == 4
    assert all(0.9 * 0.03 <= value <= 0.03 + 1e-4 for value in relative)  # clipping to [0, 1] may shorten a step
    assert all(0.9 <= value <= 1 + 1e-4 for value in absolute)
    summary = json.loads((out / "summary.json").read_text())
    assert {c["eps_label"] for c in summary["cells"] if c["attack"] == "fgsm-l2"} == {"1", "0.03 nl2"}


def test_a_database_of_0_2_gains_the_budget_columns(tmp_path):
    from ciidefence.evaluation.run_folder import read_run
    from ciidefence.evaluation.store import ADDED_COLUMNS, SCHEMA

    old = SCHEMA
    for name, definition in ADDED_COLUMNS.items():
        old = old.replace(f"    {name} {definition},\n", "")
    assert "nl2" not in old
    with sqlite3.connect(tmp_path / "results.sqlite") as connection:
        connection.executescript(old)
        connection.execute("INSERT INTO results VALUES ('a.jpg', 1, 'm', 'none', '{}', 'h', 'e', 'main', 'clean', "
                           "'{}', NULL, '-', 'clean', NULL, NULL, 1, 1, 1, 1, 0, 0, 0.5, 0, NULL)")
    (row,) = read_run(tmp_path).rows
    assert row.budget == "absolute" and row.nl2 is None and row.eot == 1 and row.source is None


def test_the_convergence_flag_trips_on_a_falling_series_and_not_on_a_flat_one():
    from ciidefence.evaluation.checks import convergence, still_falling

    assert still_falling([0.50, 0.30, 0.10], 100)
    assert not still_falling([0.20, 0.20, 0.195], 200)  # one image: noise
    assert not still_falling([0.40, 0.20, 0.21], 100)

    def bpda(steps, eot, accuracy, purpose):
        return Cell("m", "rrp", "h", f"{steps}-{eot}", purpose, "pgd", json.dumps({"max_iter": steps}), 4 / 255,
                    "4/255", "bpda", "identity", 100, 0, int(100 * accuracy), accuracy, 0, 1, 0, 0, 0, 0, 0, eot=eot)

    falling = [bpda(10, 2, 0.6, "main"), bpda(20, 2, 0.4, "convergence"), bpda(50, 2, 0.2, "convergence"),
               bpda(10, 1, 0.7, "convergence"), bpda(10, 5, 0.6, "convergence"), bpda(10, 20, 0.6, "convergence")]
    (check,) = convergence(falling)
    assert check.steps == [(10, 0.6), (20, 0.4), (50, 0.2)] and [e for e, _ in check.eot] == [1, 2, 5, 20]
    assert not check.converged
    flat = [bpda(10, 2, 0.3, "main"), bpda(20, 2, 0.3, "convergence"), bpda(50, 2, 0.3, "convergence"),
            *(bpda(10, eot, 0.3, "convergence") for eot in (1, 5, 20))]
    assert convergence(flat, 100)[0].verdict == "converged"


def test_a_convergence_check_with_a_partial_or_missing_point_is_incomplete_not_converged():
    from ciidefence.evaluation.checks import convergence
    from ciidefence.evaluation.summary import at_a_glance, convergence_markdown

    def bpda(steps, eot, images, purpose):
        return Cell("m", "pixel-deflection", "h", f"{steps}-{eot}", purpose, "pgd", json.dumps({"max_iter": steps}),
                    4 / 255, "4/255", "bpda", "differentiable", images, 0, 0, 0.0, 0, 1, 0, 0, 0, 0, 0, eot=eot)

    complete = [bpda(50, 20, 200, "main"), bpda(10, 20, 200, "convergence"), bpda(20, 20, 200, "convergence"),
                *(bpda(50, eot, 200, "convergence") for eot in (1, 5))]
    assert convergence(complete, 200)[0].verdict == "converged"
    (partial,) = convergence([*complete[:2], bpda(20, 20, 64, "convergence")], 200)  # 20 steps on 64 images
    assert partial.partial == (("steps", 20),) and partial.missing == (("eot", 1), ("eot", 5))
    assert partial.verdict == "incomplete" and not partial.converged
    row = convergence_markdown([partial])[-2]
    assert "20: 0.0% †" in row and "1: not run, 5: not run, 20: 0.0%" in row and "**incomplete**" in row
    assert "(convergence incomplete)" in "\n".join(at_a_glance(complete[:1], 200, [partial]))
    (short_main,) = convergence([bpda(50, 20, 120, "main"), *complete[1:]], 200)
    assert short_main.partial == (("steps", 50), ("eot", 20)) and short_main.verdict == "incomplete"


def test_the_convergence_figure_has_an_eot_panel_only_when_a_randomised_defence_was_attacked():
    from ciidefence.evaluation.checks import convergence
    from ciidefence.evaluation.figures import convergence_figure

    def bpda(defence, steps, eot, purpose):
        return Cell("m", defence, "h", f"{defence}-{steps}-{eot}", purpose, "pgd", json.dumps({"max_iter": steps}),
                    4 / 255, "4/255", "bpda", "identity", 100, 0, 10, 0.1, 0, 1, 0, 0, 0, 0, 0, eot=eot)

    deterministic = [bpda("jpeg", 50, 1, "main"), bpda("jpeg", 10, 1, "convergence")]
    randomised = [bpda("rrp", 50, 20, "main"), bpda("rrp", 10, 20, "convergence"), bpda("rrp", 50, 5, "convergence")]
    (steps_only,) = convergence_figure(convergence(deterministic)).axes
    assert steps_only.get_xlabel() == "attack steps" and len(steps_only.get_lines()) == 1
    both = convergence_figure(convergence(deterministic + randomised)).axes
    assert [a.get_xlabel() for a in both] == ["attack steps", "EOT samples per step"]
    assert [len(a.get_lines()) for a in both] == [2, 1]


def test_a_convergence_series_never_mixes_an_attack_run_with_other_parameters():
    from ciidefence.evaluation.checks import convergence

    def bpda(steps, restarts, accuracy, purpose):
        params = json.dumps({"max_iter": steps, "restarts": restarts, "step_ratio": 0.25})
        return Cell("m", "ciid", "h", f"{steps}-{restarts}", purpose, "pgd", params, 4 / 255, "4/255", "bpda",
                    "identity", 100, 0, int(100 * accuracy), accuracy, 0, 1, 0, 0, 0, 0, 0)

    cells = [bpda(50, 0, 0.05, "main"), bpda(10, 0, 0.05, "convergence"), bpda(20, 0, 0.05, "convergence"),
             bpda(50, 1, 0.30, "main"), bpda(10, 1, 0.50, "convergence"), bpda(20, 1, 0.40, "convergence")]
    checks = {c.variant: c for c in convergence(cells)}
    assert checks["restarts=0"].steps == [(10, 0.05), (20, 0.05), (50, 0.05)] and checks["restarts=0"].converged
    assert checks["restarts=1"].steps == [(10, 0.5), (20, 0.4), (50, 0.3)] and not checks["restarts=1"].converged
    assert checks["restarts=1"].title == "PGD (L-inf) (restarts=1)"


def test_two_configurations_of_one_defence_each_get_their_own_convergence_verdict():
    from ciidefence.evaluation.checks import convergence
    from ciidefence.evaluation.summary import at_a_glance

    def bpda(digest, steps, accuracy, purpose, model="m"):
        return Cell(model, "ciid", digest, f"{model}-{digest}-{steps}", purpose, "pgd", json.dumps({"max_iter": steps}),
                    4 / 255, "4/255", "bpda", "identity", 100, 0, int(100 * accuracy), accuracy, 0, 1, 0, 0, 0, 0, 0)

    falling = [bpda("aaa", 50, 0.2, "main"), bpda("aaa", 10, 0.6, "convergence"), bpda("aaa", 20, 0.4, "convergence")]
    flat = [bpda("bbb", 50, 0.0, "main"), bpda("bbb", 10, 0.0, "convergence"), bpda("bbb", 20, 0.0, "convergence")]
    checks = {check.defence_hash: check for check in convergence(falling + flat)}
    assert not checks["aaa"].converged and checks["bbb"].converged
    glance = "\n".join(at_a_glance([falling[0], flat[0]], 100, list(checks.values())))
    assert glance.count("(not converged)") == 1  # the sweep point whose attack still gains, not its neighbour
    other_model = [bpda("aaa", steps, 0.0, purpose, model="m2") for steps, purpose in
                   ((50, "main"), (10, "convergence"), (20, "convergence"))]
    verdicts = {(check.model, check.defence_hash): check.converged for check in convergence(falling + other_model)}
    assert verdicts == {("m", "aaa"): False, ("m2", "aaa"): True}


def test_the_convergence_check_plans_more_steps_and_eot_samples_for_random_defences():
    from ciidefence.evaluation import RunConfig

    config = RunConfig(data="d", labels=None, model="m", checkpoint=None, random_weights=False,
                       defences=("none", "jpeg", "random-resize-pad"), ciid={}, attacks=("pgd",), threats=("bpda",),
                       eps=(4 / 255,), eot_samples=2, sanity=False, convergence=True, approximations=("identity",))
    checks = [(e.target, dict(e.params)["max_iter"], e.eot) for e in config.experiments() if e.purpose == "convergence"]
    assert sorted(t for t in checks if t[0] == "jpeg") == [("jpeg", 20, 1), ("jpeg", 50, 1)]
    assert sorted(t for t in checks if t[0] == "random-resize-pad") == [
        ("random-resize-pad", 10, 1), ("random-resize-pad", 10, 5), ("random-resize-pad", 10, 20),
        ("random-resize-pad", 20, 2), ("random-resize-pad", 50, 2)]


def test_eot_averages_the_stated_number_of_samples(classifier):
    from ciidefence.attacks.estimators import art_estimator

    class Counting(torch.nn.Module):
        calls = 0

        def forward(self, images, generator=None):
            Counting.calls += 1
            return images

    estimator = art_estimator(classifier, [ARTPreprocessor(Counting(), "identity")], eot_samples=5)
    images = torch.rand(1, 3, 224, 224).numpy()
    Counting.calls = 0
    estimator.loss_gradient(images, np.eye(1000)[[3]])
    assert Counting.calls == 5


@pytest.mark.parametrize("attack", ["apgd-ce", "apgd-dlr"])
def test_apgd_keeps_eot(classifier, photo, attack):
    # ART's APGD attacks an estimator of its own making; EOT must survive that
    from ciidefence.attacks import attack_spec
    from ciidefence.attacks.estimators import art_estimator

    class Unchanged(torch.nn.Module):
        def forward(self, images, generator=None):
            return images

    gradients = []

    def counting(images, generator=None):  # an approximation is called once per gradient
        gradients.append(len(images))
        return images

    image = classifier.prepare(photo).numpy()
    label = np.eye(1000)[[classifier(torch.from_numpy(image)).argmax(1).item()]]
    counts = []
    for eot in (1, 5):
        estimator = art_estimator(classifier, [ARTPreprocessor(Unchanged(), counting)], eot_samples=eot)
        built = attack_spec(attack).build(estimator, 4 / 255, {"max_iter": 2, "step_ratio": 2.0, "restarts": 1}, 1)
        gradients.clear()
        np.random.seed(0)
        built.generate(image, y=label)
        counts.append(len(gradients))
    assert counts[0] > 0 and counts[1] == 5 * counts[0]


def test_a_list_of_models_writes_one_table_per_model_in_one_run_folder(data_dir, tmp_path):
    out = tmp_path / "run"
    result = evaluate(data_dir, out, "--limit", "2", "--attacks", "fgsm", "--eps", "4/255", "--no-sanity",
                      "--defences", "none,jpeg", "--model", "efficientnet_lite0,efficientnet_lite1")
    assert result.stdout.count("| defence | clean |") == 2
    with sqlite3.connect(out / "results.sqlite") as connection:
        counts = dict(connection.execute("SELECT model, COUNT(*) FROM results GROUP BY model").fetchall())
    assert counts == {"efficientnet_lite0": 2 * 2 * 2, "efficientnet_lite1": 2 * 2 * 2}
    summary = (out / "summary.md").read_text()
    assert all(f"# Evaluation summary: efficientnet_lite{i}" in summary for i in (0, 1))
    assert (out / "accuracy_table_efficientnet_lite1.png").stat().st_size > 0
    again = evaluate(data_dir, out, "--limit", "2", "--attacks", "fgsm", "--eps", "4/255", "--no-sanity",
                     "--defences", "none,jpeg", "--model", "efficientnet_lite0,efficientnet_lite1", "--resume")
    assert again.returncode == 0  # nothing left to do: each model's units are its own
    bad = evaluate(data_dir, tmp_path / "bad", "--model", "efficientnet_lite0,alexnet", check=False)
    assert bad.returncode == 2 and "unknown model alexnet" in bad.stderr


def test_transfer_attacks_are_made_on_the_source_and_scored_on_the_evaluated_model(data_dir, tmp_path):
    out = tmp_path / "run"
    evaluate(data_dir, out, "--limit", "2", "--attacks", "fgsm", "--eps", "4/255", "--no-sanity",
             "--defences", "none,jpeg", "--threat", "graybox,transfer", "--transfer-from", "efficientnet_lite2")
    with sqlite3.connect(out / "results.sqlite") as connection:
        rows = connection.execute("SELECT threat, source, model, l2 FROM results WHERE attack='fgsm' "
                                  "AND defence='none' ORDER BY threat, image").fetchall()
    graybox = [r for r in rows if r[0] == "graybox"]
    transfer = [r for r in rows if r[0] == "transfer"]
    assert len(graybox) == len(transfer) == 2
    assert all(r[1] == "efficientnet_lite2" and r[2] == "efficientnet_lite0" for r in transfer)
    assert [r[3] for r in transfer] != [r[3] for r in graybox]  # another model's gradients
    glance = (out / "summary.md").read_text().split("## At a glance")[1]
    assert "transfer-from-efficientnet_lite2" in glance
    bad = evaluate(data_dir, tmp_path / "bad", "--threat", "transfer", check=False)
    assert bad.returncode == 2 and "--transfer-from" in bad.stderr


def test_the_adaptive_preset_plans_strong_bpda_with_eot_and_the_convergence_check(data_dir, tmp_path):
    result = evaluate(data_dir, tmp_path / "run", "--preset", "adaptive", "--limit", "1",
                      "--defences", "none,ciid,random-resize-pad", "--dry-run")
    plan = result.stdout
    for attack in ("pgd", "apgd-ce", "apgd-dlr"):
        assert f"{attack} eps 4/255 bpda-identity on random-resize-pad" in plan
    assert "graybox" not in plan.replace("pgd eps 8/255 graybox", "").replace("pgd eps 1 graybox", "")
    assert "(10 steps, EOT 20)" in plan and "(50 steps, EOT 5)" in plan and "convergence" in plan


def test_shards_split_the_selected_images_into_disjoint_parts():
    from ciidefence.evaluation import RunConfig

    def config(shard):
        return RunConfig(data="d", labels=None, model="m", checkpoint=None, random_weights=False,
                         defences=("none",), ciid={}, attacks=("fgsm",), limit=10, shard=shard)

    images = list(range(25))
    parts = [config((index, 3)).select(images) for index in range(3)]
    assert sorted(sum(parts, [])) == list(range(10)) and parts[1] == [1, 4, 7]
    with pytest.raises(ConfigError, match="shard"):
        config((3, 3))
