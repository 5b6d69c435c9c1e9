"""What a result is gets stored, and every random draw comes from what is computed (issue 10)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from ciidefence import CIIDefence, CIIDefenceConfig, DefendedClassifier, custom_classifier, purify
from ciidefence.defences import build_defence
from ciidefence.defences.pixel_deflection import deflect_pixels
from ciidefence.defences.transforms import TotalVarianceMinimization, random_resize_pad
from ciidefence.errors import InputError
from ciidefence.evaluation import Evaluation, ResultStore, RunConfig
from ciidefence.randomness import seeded_generator, stable_seed
from ciidefence.regions import class_activation_maps, select_peaks
from test_evaluation import data_dir, evaluate, evaluate_killed_after, table_rows  # noqa: F401  (the fixture)


def generators(*names):
    return [seeded_generator("test", name) for name in names]


@pytest.mark.parametrize("transform", [
    lambda images, g: random_resize_pad(images, generator=g),
    lambda images, g: deflect_pixels(images, torch.zeros(images.shape[0], *images.shape[-2:]), 50, 3, g),
    lambda images, g: TotalVarianceMinimization(max_iter=2)(images, generator=g),
])
def test_random_functionals_draw_each_image_from_its_own_generator(transform):
    images = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    together = transform(images, generators("a", "b", "c"))
    alone = transform(images[1:2], generators("b"))
    assert torch.equal(together[1:2], alone)  # the same whatever the batch
    assert not torch.equal(transform(images[1:2], generators("z")), alone)  # and it is random
    with pytest.raises(ValueError, match="3 images"):
        transform(images, generators("a"))


def test_random_boxes_follow_the_generator(classifier, photo):
    config = CIIDefenceConfig(regions="random")
    first = purify(photo, classifier, config, generator=generators("x"))
    again = purify(photo, classifier, config, generator=generators("x"))
    other = purify(photo, classifier, config, generator=generators("y"))
    assert torch.equal(first.boxes, again.boxes) and not torch.equal(first.boxes, other.boxes)


def test_ciidefence_output_does_not_depend_on_the_batch(classifier, sample_paths):
    from ciidefence import load_image

    views = torch.cat([classifier.prepare(load_image(p)[None]) for p in sample_paths[:3]])
    batch = CIIDefence(classifier)(views)
    for i in range(len(views)):
        assert torch.allclose(CIIDefence(classifier)(views[i : i + 1])[0], batch[i], atol=1e-6)


def test_stable_seed_is_a_pure_function_of_its_parts():
    assert stable_seed(0, "exp", "a.jpg") == stable_seed(0, "exp", "a.jpg")
    assert stable_seed(0, "exp", "a.jpg") != stable_seed(0, "exp", "b.jpg")
    # the first 8 bytes of SHA-256('[0,"exp","a.jpg"]'): the same on every machine and release
    assert stable_seed(0, "exp", "a.jpg") == 8532204519990423569


def small_config(data, **changes):
    values = dict(data=str(data), labels=None, model="efficientnet_lite0", checkpoint=None, random_weights=False,
                  defences=("none", "random-resize-pad", "pixel-deflection", "ciid-random-boxes"), ciid={},
                  attacks=("fgsm", "pgd"), attack_overrides={"pgd": {"max_iter": "2", "restarts": "1"}},
                  eps=(2 / 255,), limit=4, batch_size=2, sanity=False, eval_draws=3)
    values.update(changes)
    return RunConfig(**values)


def rows_of(store):
    return sorted((r.image, r.defence_hash, r.experiment, r.pred_clean_defended, r.pred_adv,
                   r.pred_defended_adv, round(r.l2, 5), r.draws, r.draws_correct, r.vote)
                  for r in store.result_rows())


def test_a_run_in_another_order_writes_the_same_rows(data_dir, tmp_path):  # noqa: F811
    config = small_config(data_dir)
    forward = Evaluation(config, torch.device("cpu"))
    with ResultStore(tmp_path / "forward.sqlite") as store:
        forward.run(store)
        expected = rows_of(store)
    backward = Evaluation(config, torch.device("cpu"))
    backward.experiments = backward.experiments[::-1]  # the clean experiment last
    with ResultStore(tmp_path / "backward.sqlite") as store:
        backward.run(store)
        assert rows_of(store) == expected
    assert len(expected) == 4 * 4 * 3


def test_a_users_pgd20_is_not_taken_for_the_sanity_check(data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    evaluate(data_dir, out, "--limit", "2", "--attacks", "pgd", "--attack-param", "pgd.max_iter=20",
             "--eps", "8/255", "--defences", "none,jpeg")
    summary = json.loads((out / "summary.json").read_text())
    purposes = {(c["defence"], c["purpose"], c["eps_label"]) for c in summary["cells"] if c["attack"] == "pgd"}
    # the user's PGD-20 at 8/255 for both defences, and the sanity attacks on the undefended model only
    assert purposes == {("none", "main", "8/255"), ("jpeg", "main", "8/255"), ("none", "sanity", "8/255"),
                        ("none", "sanity", "1")}
    glance = (out / "summary.md").read_text().split("## At a glance")[1]
    assert "PGD (L-inf) 8/255 graybox" in glance


def test_a_typo_in_data_or_model_leaves_no_run_folder(data_dir, tmp_path):  # noqa: F811
    base = ["--limit", "1", "--attacks", "fgsm", "--no-sanity", "--out", str(tmp_path / "run")]
    for wrong in (["--data", str(tmp_path / "no-such-folder")],
                  ["--data", str(data_dir), "--model", "resnet50"]):  # no resnet50 weights on this machine
        result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "evaluate", *wrong, *base],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "run").exists()


def test_modules_print_briefly_and_register_the_classifier_once(classifier):
    defence = CIIDefence(classifier, CIIDefenceConfig(sigma=0.04))
    assert repr(defence) == "CIIDefence(classifier='efficientnet_lite0', sigma=0.04)"
    state = DefendedClassifier(classifier, defence).state_dict()
    assert all(key.startswith("classifier.") for key in state)
    assert "Conv2d" not in repr(build_defence("pixel-deflection", classifier).module)


def test_user_networks_are_not_frozen_and_gradcam_refuses_inference_mode():
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5),
                               torch.nn.ReLU(), torch.nn.Linear(5, 10))
    net = torch.nn.Sequential(body, head)
    classifier = custom_classifier(net, body, head, input_size=32)
    assert all(p.requires_grad for p in net.parameters())
    images = torch.rand(1, 3, 32, 32)
    assert class_activation_maps(classifier, images, 2).cams.shape == (1, 2, 32, 32)
    with torch.inference_mode(), pytest.raises(InputError, match="inference_mode"):
        class_activation_maps(classifier, images, 2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_types_are_refused_with_a_clear_error(classifier, photo, dtype):
    with pytest.raises(InputError, match="float32"):
        CIIDefence(classifier)(photo.to(dtype))


def test_weak_cam_peaks_are_ignored():
    maps = torch.zeros(1, 1, 20, 20)
    maps[0, 0, 5, 5] = 1.0
    maps[0, 0, 15, 15] = 0.05  # a spurious maximum, 5% of the map's
    _, valid = select_peaks(maps, 2, 3, min_ratio=0.1)
    assert valid.tolist() == [[[True, False]]]
    _, valid = select_peaks(maps, 2, 3, min_ratio=0.0)
    assert valid.tolist() == [[[True, True]]]


def test_sweep_dry_run_writes_nothing(data_dir, tmp_path):  # noqa: F811
    result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "sweep", "--data", str(data_dir), "--out",
                             str(tmp_path / "run"), "--limit", "1", "--grid", "sigma=0.01,0.02", "--rivals", "jpeg",
                             "--attacks", "fgsm", "--dry-run"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "estimated total" in result.stdout and not (tmp_path / "run").exists()


def test_resume_of_randomised_defences_after_sigkill_matches_an_uninterrupted_run(data_dir, tmp_path):  # noqa: F811
    options = ["--limit", "6", "--batch-size", "1", "--attacks", "fgsm", "--eps", "2/255",
               "--defences", "none,random-resize-pad,pixel-deflection", "--no-sanity"]
    reference = tmp_path / "reference"
    evaluate(data_dir, reference, *options)
    expected = table_rows(reference)
    assert len(expected) == 6 * 3 * 2

    killed = tmp_path / "killed"
    partial = evaluate_killed_after(data_dir, killed, options, rows=21)  # past the clean rows
    assert 18 <= len(partial) < len(expected), "the run was not killed partway"
    report = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "report", str(killed)],
                            capture_output=True, text=True, timeout=120)
    assert "Incomplete:" in report.stdout and "†" in report.stdout

    evaluate(data_dir, killed, *options, "--resume")  # the stale lock of the killed process is taken over
    assert table_rows(killed) == expected
    assert "Incomplete" not in (killed / "summary.md").read_text()
    shutil.rmtree(killed)
