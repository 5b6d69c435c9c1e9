"""The ciid command through a real subprocess, as a user runs it."""

import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from conftest import BUNDLED_SAMPLE


def ciid(*args, cwd=None):
    command = [sys.executable, "-m", "ciidefence.cli.main", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result, exit_code, text):
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    assert text in result.stderr


def test_classify_json_compares_defences_and_reports_accuracy(sample_paths):
    result = ciid("classify", *sample_paths[:2], "--defence", "none,ciid", "--top", "3",
                  "--labels", BUNDLED_SAMPLE / "labels.csv", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # stdout holds nothing but the JSON
    assert document["model"] == "efficientnet_lite0"
    assert document["defence_config"]["top_k"] >= 1
    first = document["results"][0]
    assert set(first["predictions"]) == {"none", "ciid"}
    assert len(first["predictions"]["ciid"]) == 3
    assert first["label"] == 0 and first["label_name"] == "tench"
    assert document["accuracy"]["none"]["images"] == 2
    assert document["accuracy"]["none"]["top1"] == document["accuracy"]["none"]["correct"] / 2


def test_classify_with_an_attack_prints_what_each_defence_keeps_of_it(sample_paths):
    result = ciid("classify", *sample_paths[:3], "--defence", "none,jpeg", "--labels", BUNDLED_SAMPLE / "labels.csv",
                  "--attack", "pgd", "--eps", "4/255", "--json", "--threads", "1")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["attack"] == {"name": "pgd", "eps": 4 / 255, "threat": "graybox"}
    clean, attacked = document["clean_accuracy"]["none"], document["accuracy"]["none"]
    assert clean["images"] == attacked["images"] == 3 and clean["correct"] > 0 == attacked["correct"]
    assert set(document["results"][0]["clean_predictions"]) == {"none", "jpeg"}
    text = ciid("classify", *sample_paths[:1], "--defence", "none", "--labels", BUNDLED_SAMPLE / "labels.csv",
                "--attack", "fgsm", "--threads", "1")
    assert text.returncode == 0 and "clean 1/1 = 100.0%; under FGSM 4/255 (gray-box)" in text.stdout
    bad = ciid("classify", *sample_paths[:1], "--attack", "pgd", "--eps", "2")
    assert_one_line_error(bad, 2, "eps '2' must lie in (0, 1]")


def test_classify_defends_the_view_unless_asked_for_the_full_image(sample_paths):
    def ciid_top(*extra):
        result = ciid("classify", sample_paths[0], "--defence", "median", "--top", "1", "--json", "--threads", "1",
                      *extra)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["results"][0]["predictions"]["median"][0]["probability"]

    import torch

    from ciidefence.defences.registry import build_defence
    from ciidefence.images import load_image
    from ciidefence.models import load_classifier

    classifier = load_classifier()
    median = build_defence("median", classifier)
    image = load_image(sample_paths[0])[None]
    with torch.no_grad():
        at_view = classifier(median(classifier.prepare(image))).softmax(1).max().item()
        at_full = classifier(median(image)).softmax(1).max().item()
    assert abs(at_view - at_full) > 1e-3  # the two places differ on this image
    assert ciid_top() == pytest.approx(at_view, abs=1e-5)
    assert ciid_top("--resolution", "full") == pytest.approx(at_full, abs=1e-5)


def test_classify_compares_rival_defences_and_purify_writes_one(tmp_path, sample_paths):
    result = ciid("classify", sample_paths[0], "--defence", "none,jpeg,pixel-deflection,ciid-k1", "--json")
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)["results"][0]["predictions"]
    assert set(predictions) == {"none", "jpeg", "pixel-deflection", "ciid-k1"}
    result = ciid("purify", sample_paths[0], "--defence", "median", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    written = Image.open(tmp_path / f"{sample_paths[0].stem}.png")
    assert written.size == Image.open(sample_paths[0]).size


def test_classify_text_with_a_bad_file_among_good_ones(tmp_path, sample_paths):
    (tmp_path / "broken.jpg").write_bytes(sample_paths[0].read_bytes()[:500])
    result = ciid("classify", sample_paths[0], tmp_path / "broken.jpg", sample_paths[1], "--defence", "none")
    assert_one_line_error(result, 1, "broken.jpg: corrupt or truncated")
    assert len(result.stdout.strip().splitlines()) == 2  # both good images were classified
    assert "1 of 3 images failed" in result.stderr


def test_purify_writes_pngs_of_the_same_size(tmp_path, sample_paths):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in sample_paths[:2]:
        shutil.copy(path, inputs / path.name)
    result = ciid("purify", inputs, "--out", tmp_path / "out", "--top-k", "2", "--peaks", "1",
                  "--half-width", "6", "--inpainter", "navier-stokes", "--sigma", "0.03")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    for path in sample_paths[:2]:
        written = Image.open(tmp_path / "out" / f"{path.stem}.png")
        assert written.size == Image.open(path).size
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_explain_writes_a_figure(tmp_path, sample_paths):
    result = ciid("explain", sample_paths[0], "--out", tmp_path / "fig.png", "--top-k", "2")
    assert result.returncode == 0, result.stderr
    width, height = Image.open(tmp_path / "fig.png").size
    assert width > 1000 and height > 500
    assert "undefended: tench" in result.stderr


def test_explain_draws_an_adversarial_image(tmp_path, sample_paths):
    result = ciid("explain", sample_paths[0], "--out", tmp_path / "adv.png", "--top-k", "2", "--attack", "pgd",
                  "--eps", "4/255", "--label", "0", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "under PGD (L-inf) 4/255 (gray-box, at the classifier's view)" in result.stderr
    assert "undefended: tench" not in result.stderr  # the attack moved the bare classifier off the true class
    assert Image.open(tmp_path / "adv.png").size[0] > 1000


@pytest.mark.parametrize("args,code,text", [
    (["classify", "MISSING.jpg"], 1, "MISSING.jpg: no such file"),
    (["classify", "IMAGE", "--model", "alexnet"], 2, "alexnet"),
    (["classify", "IMAGE", "--defence", "magic"], 2, "unknown defence magic"),
    (["classify", "IMAGE", "--inpainter", "photoshop"], 2, "photoshop"),
    (["classify", "IMAGE", "--wavelet", "nope"], 2, "unknown wavelet 'nope'"),
    (["classify", "IMAGE", "--inpainter", "learned"], 2, "needs inpainter_model"),
    (["classify", "IMAGE", "--inpainter", "telea", "--inpainter-precision", "bfloat16"], 2, "deepfill inpainter only"),
    (["classify", "IMAGE", "--model", "resnet50", "--checkpoint", "MISSING.pt"], 2, "no such checkpoint"),
    (["classify", "IMAGE", "--max-pixels", "1000"], 1, "more than the limit"),
    (["purify", "IMAGE"], 2, "--out"),
    (["purify", "IMAGE", "--out", "OUT", "--defence", "none"], 2, "'none' is not one of"),
    (["explain", "IMAGE", "--out", "OUT/f.png", "--regions", "random"], 2, "use --regions cam"),
    (["explain", "IMAGE", "--out", "OUT/f.txt"], 2, "a figure file ends in .png, .pdf, .svg"),
    (["explain", "IMAGE", "--out", "OUT/f.png", "--label", "3"], 2, "give --attack too"),
    (["explain", "IMAGE", "--out", "OUT/f.png", "--attack", "pgd", "--eps", "9"], 2, "eps '9' must lie in (0, 1]"),
    (["classify", "OUT"], 2, "holds no image files"),
    (["classify", "IMAGE", "--threads", "100000"], 2, "100000 is not in the range 1<=x<=1024"),
    (["classify", "IMAGE", "--seed", "100000000000000000000000"], 2, "is not in the range 0<=x<="),
    (["classify", "IMAGE", "--defence", "ciid", "--wavelet-levels", "1000"], 2, "wavelet_levels 1000 is more than"),
])
def test_bad_input_gives_one_line_and_non_zero_exit(args, code, text, sample_paths, tmp_path):
    args = [str(sample_paths[0]) if a == "IMAGE" else a.replace("OUT", str(tmp_path)) for a in args]
    assert_one_line_error(ciid(*args), code, text)


@pytest.mark.parametrize(("content", "text"), [
    ("file,class_index\nA,1\nA,2\n", "A is labelled both 1 and 2"),
    ("file,class_index\nA,5000\n", "class_index 5000 is outside 0..999"),
    ("file,class_index\nA,one\n", "class_index 'one' is not an integer"),
    ("name,label\nA,1\n", "needs the columns file and class_index, has name, label"),
])
def test_a_bad_labels_csv_gives_one_line(tmp_path, sample_paths, content, text):
    (tmp_path / "labels.csv").write_text(content.replace("A", sample_paths[0].name))
    assert_one_line_error(ciid("classify", sample_paths[0], "--labels", tmp_path / "labels.csv"), 2,
                          text.replace("A ", f"{sample_paths[0].name} "))


def test_labels_with_a_bom_gifs_and_unlabelled_images_are_all_accounted_for(tmp_path, sample_paths):
    Image.open(sample_paths[0]).convert("RGB").save(tmp_path / "first.gif")
    shutil.copy(sample_paths[1], tmp_path / sample_paths[1].name)
    (tmp_path / "labels.csv").write_bytes("\ufefffile,class_index\nfirst.gif,0\n".encode())
    result = ciid("classify", tmp_path, "--labels", tmp_path / "labels.csv")
    assert result.returncode == 0, result.stderr
    assert "first.gif" in result.stdout and sample_paths[1].name in result.stdout
    assert "/1 = " in result.stdout and "(1 of 2 images have no label in" in result.stdout
