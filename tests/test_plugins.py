"""Defences written outside the package: evaluated under every threat, from the command line and from Python,
refused when broken or changed on resume; the worked example of docs/PLUGINS.md runs as written."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ciidefence as cii
from ciidefence.defences.registry import build_defence
from ciidefence.errors import ConfigError
from conftest import BUNDLED_SAMPLE, REPO

EXAMPLES = REPO / "docs" / "examples"
PLAIN, RANDOM = "median_jpeg:make_defence", "median_jpeg:make_random_defence"
SMALL = ["--attacks", "pgd", "--eps", "4/255", "--attack-param", "pgd.max_iter=2", "--attack-param", "pgd.restarts=0",
         "--limit", "2", "--batch-size", "2", "--no-sanity", "--threads", "1"]


def ciid(*args, cwd=EXAMPLES, env=None, check=True):
    result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def rows(run):
    with sqlite3.connect(Path(run) / "results.sqlite") as connection:
        return connection.execute("SELECT defence, threat, approximation, eot, image, pred_defended_adv FROM results "
                                  "ORDER BY defence, threat, approximation, eot, image").fetchall()


@pytest.fixture
def examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_the_worked_example_runs_under_every_threat_from_the_command_line(tmp_path):
    run = tmp_path / "run"
    ciid("evaluate", "--data", BUNDLED_SAMPLE, "--out", run, "--defences", f"none,jpeg,{PLAIN},{RANDOM}",
         "--threat", "graybox,bpda,transfer", "--transfer-from", "efficientnet_lite1", "--eot", "2", *SMALL)
    found = {(defence, threat, approximation, eot) for defence, threat, approximation, eot, *_ in rows(run)}
    for plugin, eot in ((PLAIN, 1), (RANDOM, 2)):  # EOT applies to the one that declares itself randomised
        assert {(plugin, "clean", None, 1), (plugin, "graybox", None, 1), (plugin, "transfer", None, 1),
                (plugin, "bpda", "identity", eot), (plugin, "bpda", "differentiable", eot)} <= found
    assert ("jpeg", "bpda", "identity", 1) in found  # the same threats as a built-in defence
    summary = (run / "summary.md").read_text()
    assert PLAIN in summary and RANDOM in summary
    for group in ("graybox", "adaptive", "transfer"):  # the attacker's figure, per threat model
        assert f"worst case over every {group} attack" in summary
    with sqlite3.connect(run / "results.sqlite") as connection:
        stored = dict(connection.execute("SELECT DISTINCT defence, defence_config FROM results"))
    assert all(key in stored[PLAIN] for key in ('"quality":75', '"source_digest":', '"state_digest":'))


def test_the_worked_example_from_python_gives_typed_rows_and_reads_back(tmp_path, examples_importable):
    out = tmp_path / "api"
    found = cii.evaluate(data=BUNDLED_SAMPLE, out=out, defences=["none", PLAIN, RANDOM], attacks=["fgsm"],
                         eps=["4/255"], threat=["graybox", "bpda"], approximations=["identity"], eot=2, limit=2,
                         batch_size=2)
    assert all(isinstance(row, cii.ResultRow) for row in found) and found == cii.read_results(out)
    assert {(row.defence, row.threat, row.eot) for row in found if row.threat == "bpda"} == {(PLAIN, "bpda", 1),
                                                                                          (RANDOM, "bpda", 2)}
    clean = [row for row in found if row.attack == "clean" and row.defence == "none"]
    assert [row.correct for row in clean] == [row.pred_clean == row.label for row in clean]
    assert (out / "summary.md").is_file()
    with pytest.raises(ConfigError, match="no results.sqlite"):
        cii.read_results(tmp_path / "nothing")


def test_a_randomised_plugin_draws_the_same_whatever_the_batching(tmp_path):
    options = ["--defences", RANDOM, "--attacks", "fgsm", "--eps", "4/255", "--limit", "3", "--no-sanity",
               "--threads", "1"]
    ciid("evaluate", "--data", BUNDLED_SAMPLE, "--out", tmp_path / "one", "--batch-size", "1", *options)
    ciid("evaluate", "--data", BUNDLED_SAMPLE, "--out", tmp_path / "three", "--batch-size", "3", *options)
    assert rows(tmp_path / "one") == rows(tmp_path / "three")


PLUGIN = """
import torch

class Blur(torch.nn.Module):
    def __init__(self, strength):
        super().__init__()
        self.params = {{"strength": strength}}

    def forward(self, images):
        return torch.nn.functional.avg_pool2d(images, 3, 1, 1, count_include_pad=False)

def make(classifier):
    return Blur({strength})
"""


def test_a_plugin_changed_since_the_run_began_is_refused_on_resume(tmp_path):
    (tmp_path / "blur.py").write_text(PLUGIN.format(strength=1))
    run = tmp_path / "run"
    options = ["evaluate", "--data", BUNDLED_SAMPLE, "--out", run, "--defences", "none,blur:make", "--attacks",
               "fgsm", "--eps", "4/255", "--limit", "1", "--no-sanity", "--threads", "1"]
    ciid(*options, cwd=tmp_path)
    ciid(*options, "--resume", cwd=tmp_path)  # unchanged: nothing left to do, accepted
    before = rows(run)
    (tmp_path / "blur.py").write_text(PLUGIN.format(strength=2))
    changed = ciid(*options, "--resume", cwd=tmp_path, check=False)
    assert changed.returncode == 2 and "defence blur:make has changed since this run wrote its rows" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1 and rows(run) == before


BROKEN = {
    "raises": ("def make(classifier):\n    raise RuntimeError('no weights here')", "the factory failed: RuntimeError"),
    "wrong_type": ("def make(classifier):\n    return 42", "returned int, not an nn.Module"),
    "resizes": ("import torch\nclass Half(torch.nn.Module):\n    def forward(self, x):\n"
                "        return x[..., ::2, ::2]\ndef make(classifier):\n    return Half()",
                "must return images of the same size"),
    "no_generator": ("import torch\nclass R(torch.nn.Module):\n    randomised = True\n    def forward(self, x):\n"
                     "        return x\ndef make(classifier):\n    return R()", "must take generator="),
    "out_of_range": ("import torch\nclass S(torch.nn.Module):\n    def forward(self, x):\n        return 2 * x\n"
                     "def make(classifier):\n    return S()", "outside [0, 1]"),
    "bad_params": ("import torch\nclass P(torch.nn.Module):\n    params = {'f': object()}\n    def forward(self, x):\n"
                   "        return x\ndef make(classifier):\n    return P()", "params must hold JSON values"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_and_writes_nothing(case, tmp_path):
    source, message = BROKEN[case]
    (tmp_path / f"{case}.py").write_text(source + "\n")
    result = ciid("evaluate", "--data", BUNDLED_SAMPLE, "--out", tmp_path / "run", "--defences", f"none,{case}:make",
                  "--attacks", "fgsm", "--limit", "1", "--no-sanity", cwd=tmp_path, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_an_import_path_that_does_not_resolve_says_why(tmp_path):
    for name, message in (("nowhere_at_all:make", "cannot import nowhere_at_all"),
                          ("median_jpeg:no_such_factory", "has no no_such_factory")):
        result = ciid("evaluate", "--data", BUNDLED_SAMPLE, "--out", tmp_path / "run", "--defences", name,
                      "--attacks", "fgsm", "--limit", "1", check=False)
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_installed_package_registers_a_defence_by_entry_point(tmp_path):
    site = tmp_path / "site"
    info = site / "my_defences-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-defences\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ciidefence.defences]\nmedian-jpeg = {PLAIN}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    assert "installed: median-jpeg" in " ".join(ciid("evaluate", "--help", cwd=tmp_path, env=env).stdout.split())
    result = ciid("classify", BUNDLED_SAMPLE / "n01440764_tench.JPEG", "--defence", "none,median-jpeg", "--json",
                  cwd=tmp_path, env=env)
    assert '"median-jpeg"' in result.stdout


def test_build_defence_takes_a_plugin_and_keeps_the_image_size(classifier, examples_importable):
    defence = build_defence(RANDOM, classifier)
    assert defence.randomised and defence.approximations == ("identity", "differentiable")
    images = torch.rand(2, 3, 64, 48)
    draws = [torch.Generator().manual_seed(seed) for seed in (1, 2)]
    out = defence(images, generator=draws)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    again = defence(images, generator=[torch.Generator().manual_seed(seed) for seed in (1, 2)])
    assert torch.equal(out, again)  # the draws come from the generators given, not from global state
    assert defence.title == RANDOM


CLASSIFIER = """
import torch
from ciidefence import custom_classifier

def make():
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU())
    linear = torch.nn.Linear(8, 1000)
    head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), linear)
    return custom_classifier(torch.nn.Sequential(body, head), body, head, input_size=64, linear_head=linear,
                             name="tiny")

def not_a_classifier():
    return torch.nn.Identity()
"""


def test_a_classifier_from_an_import_path_is_evaluated_and_named_by_it(tmp_path):
    (tmp_path / "tiny.py").write_text(CLASSIFIER)
    run = tmp_path / "run"
    ciid("evaluate", "--data", BUNDLED_SAMPLE, "--out", run, "--model", "tiny:make", "--defences", "none,jpeg",
         "--attacks", "fgsm", "--eps", "4/255", "--limit", "2", "--no-sanity", "--threads", "1", cwd=tmp_path)
    with sqlite3.connect(run / "results.sqlite") as connection:
        assert {model for (model,) in connection.execute("SELECT DISTINCT model FROM results")} == {"tiny:make"}
    wrong = ciid("evaluate", "--data", BUNDLED_SAMPLE, "--out", tmp_path / "wrong", "--model",
                 "tiny:not_a_classifier", "--attacks", "fgsm", "--limit", "1", cwd=tmp_path, check=False)
    assert wrong.returncode == 2 and "not a Classifier" in wrong.stderr and not (tmp_path / "wrong").exists()


def test_the_documented_example_is_the_file_the_tests_run():
    documented = (REPO / "docs" / "PLUGINS.md").read_text().split("```python\n")[1].split("```")[0]
    assert documented == (EXAMPLES / "median_jpeg.py").read_text().split('"""', 2)[2].lstrip("\n")


def test_a_randomised_defence_is_scored_k_times_without_changing_its_one_draw_figure(tmp_path):
    options = ["--data", BUNDLED_SAMPLE, "--defences", "none,jpeg,random-resize-pad", "--attacks", "fgsm", "--eps",
               "4/255", "--limit", "4", "--batch-size", "4", "--no-sanity", "--threads", "1"]
    ciid("evaluate", "--out", tmp_path / "one", "--eval-draws", "1", *options)
    ciid("evaluate", "--out", tmp_path / "five", "--eval-draws", "5", *options)
    one, five = cii.read_results(tmp_path / "one"), cii.read_results(tmp_path / "five")
    assert [row.pred_defended_adv for row in one] == [row.pred_defended_adv for row in five]
    assert {(row.defence, row.draws) for row in five} == {("none", 1), ("jpeg", 1), ("random-resize-pad", 5)}
    for row in five:
        assert 0 <= row.draws_correct <= row.draws and row.vote is not None
        if row.draws == 1:
            assert row.draws_correct == row.correct and row.vote == row.pred_defended_adv
    drawn = [row for row in five if row.draws == 5]
    assert any(0 < row.draws_correct < 5 for row in drawn), "the draws never disagreed: are they all the same?"
    summary = (tmp_path / "five" / "summary.md").read_text()
    assert "## Randomised defences, scored several times" in summary and "| random-resize-pad | graybox |" in summary
    assert "scored several times" not in (tmp_path / "one" / "summary.md").read_text()


def test_a_pack_keeps_the_draws_and_a_pack_from_before_them_still_unpacks(tmp_path):
    from ciidefence.evaluation.pack import OLDER_RESULT_FIELDS, RESULT_FIELDS, pack_run, unpack_run

    run = tmp_path / "run"
    ciid("evaluate", "--data", BUNDLED_SAMPLE, "--out", run, "--defences", "none,random-resize-pad", "--attacks",
         "fgsm", "--eps", "4/255", "--limit", "2", "--no-sanity", "--threads", "1", "--eval-draws", "3")
    pack_run(run, tmp_path / "pack")
    unpack_run(tmp_path / "pack", tmp_path / "back")
    assert cii.read_results(tmp_path / "back") == cii.read_results(run)
    # the same pack as a release before the draws wrote it: segments without the three columns
    manifest = json.loads((tmp_path / "pack" / "pack.json").read_text())
    keep = [RESULT_FIELDS.index(column) for column in OLDER_RESULT_FIELDS]
    for name, entry in manifest["files"].items():
        if entry["columns"] == list(RESULT_FIELDS):
            path = tmp_path / "pack" / name
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            path.write_text("".join(json.dumps([row[i] for i in keep], separators=(",", ":")) + "\n" for row in rows))
            entry["columns"] = list(OLDER_RESULT_FIELDS)
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "pack" / "pack.json").write_text(json.dumps(manifest))
    unpack_run(tmp_path / "pack", tmp_path / "older")
    older = cii.read_results(tmp_path / "older")
    assert {(row.draws, row.draws_correct, row.vote) for row in older} == {(1, None, None)}
    assert [row.pred_defended_adv for row in older] == [row.pred_defended_adv for row in cii.read_results(run)]
