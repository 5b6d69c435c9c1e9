"""The DeepFill-style inpainter: network, contextual attention, training and resume, BPDA through it."""

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ciidefence import CIIDefence, CIIDefenceConfig, purify
from ciidefence.defences.art import ARTPreprocessor
from ciidefence.errors import CheckpointError, ConfigError
from ciidefence.images import load_image
from ciidefence.inpainting.deepfill import (
    DeepFill,
    DeepFillConfig,
    WindowedDeepFill,
    contextual_attention,
    export_deepfill,
    hole_windows,
    hole_windows_torch,
    inpaint_with_network,
    load_deepfill,
    save_deepfill,
    window_side,
)
from ciidefence.inpainting.training import Trainer, TrainingConfig, sample_batch
from ciidefence.training.trainer import DecodedImages, training_images
from conftest import REPO

TRAINING = REPO / "tests" / "data" / "train"  # the first 12 of ../shared/data/inpainting-train


@pytest.mark.parametrize("coarse", ["harmonic", "network"])
def test_the_network_changes_only_the_hole_and_stays_in_range(coarse):
    torch.manual_seed(0)
    model = DeepFill(DeepFillConfig(width=8, coarse=coarse))
    for parameter in model.decoder[-1].parameters():  # as if trained: a non-zero correction
        torch.nn.init.normal_(parameter, std=0.5)
    images = torch.rand(2, 3, 40, 40)
    holes = torch.zeros(2, 1, 40, 40)
    holes[:, :, 12:25, 10:22] = 1
    output = model(images, holes)
    assert output.shape == images.shape and output.min() >= 0 and output.max() <= 1
    assert torch.equal(output * (1 - holes), images * (1 - holes))
    assert not torch.equal(output, images)


def test_contextual_attention_copies_a_patch_that_appears_elsewhere():
    torch.manual_seed(0)
    features = torch.randn(1, 8, 16, 16)
    features[..., 9:14, 9:14] = features[..., 2:7, 3:8]  # the same 5 x 5 content twice
    truth = features[..., 11, 11].clone()
    hole = torch.zeros(1, 1, 16, 16)
    hole[..., 11, 11] = 1
    features[..., 11, 11] = 0  # unknown: only its surroundings match the copy's
    rebuilt = contextual_attention(features, hole, softmax_scale=50.0, propagation=1)
    assert torch.allclose(rebuilt[..., 11, 11], truth, atol=1e-3)
    assert torch.equal(rebuilt[..., 0, 0], features[..., 0, 0])  # outside the hole: unchanged


def test_windows_cover_each_hole_and_the_network_fills_only_the_masks():
    masks = torch.zeros(2, 60, 80, dtype=torch.bool)
    masks[0, 5:14, 3:12] = True
    masks[0, 40:49, 60:69] = True
    masks[1, 20:29, 30:39] = True
    windows = hole_windows(masks)
    assert len(windows) == 3 and all(w[3] % 4 == 0 and w[3] >= 27 for w in windows)
    model = DeepFill(DeepFillConfig(width=8))
    images = torch.rand(2, 3, 60, 80)
    output = inpaint_with_network(images, masks, model)
    assert torch.equal(output[~masks[:, None].expand_as(images)], images[~masks[:, None].expand_as(images)])


def test_weights_round_trip_and_bad_files_are_refused(tmp_path):
    model = DeepFill(DeepFillConfig(width=8, coarse="network"))
    save_deepfill(model, tmp_path / "m.safetensors")
    loaded = load_deepfill(tmp_path / "m.safetensors")
    assert loaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(),
                                                  strict=True))
    (tmp_path / "bad.safetensors").write_bytes(b"not weights")
    with pytest.raises(CheckpointError):
        load_deepfill(tmp_path / "bad.safetensors")
    with pytest.raises(ConfigError):
        DeepFillConfig(coarse="magic")


@pytest.fixture(scope="module")
def small_training_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    for path in sorted(TRAINING.glob("*.jpg"))[:12]:
        shutil.copy(path, folder / path.name)
    return folder


def test_a_few_steps_lower_the_loss_and_a_killed_run_resumes(small_training_folder, tmp_path):
    config = TrainingConfig(steps=40, batch_size=4, learning_rate=2e-3, min_half_width=4, max_half_width=4,
                            validation_images=2)
    trainer = Trainer(small_training_folder, tmp_path / "m.safetensors", DeepFillConfig(width=8), config,
                      torch.device("cpu"))
    first = [trainer.step()["l1"] for _ in range(10)]
    for _ in range(30):
        last = trainer.step()["l1"]
    assert last < sum(first[:3]) / 3
    trainer.state.step = 40
    trainer.save()

    longer = TrainingConfig(**{**config.__dict__, "steps": 45})
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(small_training_folder, tmp_path / "m.safetensors", DeepFillConfig(width=8), longer,
                torch.device("cpu"))
    resumed = Trainer(small_training_folder, tmp_path / "m.safetensors", DeepFillConfig(width=8), longer,
                      torch.device("cpu"), resume=True)
    assert resumed.state.step == 40
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(),
                                                  resumed.model.state_dict().values(), strict=True))
    history = resumed.train(validate_every=5)
    assert resumed.state.step == 45 and history[-1]["step"] == 45


def test_training_images_are_decoded_on_demand_within_a_memory_bound(small_training_folder, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(small_training_folder, folder)
    (folder / "zz_truncated.jpg").write_bytes((folder / sorted(p.name for p in folder.iterdir())[0]).read_bytes()[:300])
    paths = training_images(folder)
    bound = 2 * load_image(paths[0]).numel() * 4
    images = DecodedImages(paths, max_bytes=bound)
    for index, path in enumerate(paths[:-1]):
        assert torch.equal(images[index], load_image(path))
        assert 0 < images.cached_bytes <= bound
    assert images[len(paths) - 1] is None
    crops, holes = sample_batch(images, 4, 24, 0, random.Random(0))
    assert crops.shape == (24, 3, 32, 32) and holes.shape == (24, 1, 32, 32)


def test_the_training_command_runs_and_refuses_bad_data(small_training_folder, tmp_path):
    command = [sys.executable, "-m", "ciidefence.cli.main", "train-inpainter", "--data", str(small_training_folder),
               "--out", str(tmp_path / "m.safetensors"), "--steps", "3", "--batch-size", "2", "--width", "8",
               "--validate-every", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "masked PSNR" in result.stdout and (tmp_path / "m.safetensors").exists()
    bad = subprocess.run([*command[:5], str(tmp_path / "nothing"), *command[6:]], capture_output=True, text=True)
    assert bad.returncode == 2 and "no such folder" in bad.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists" in again.stderr  # neither the checkpoint nor the weights replaced
    elsewhere = [*command[:7], str(tmp_path / "m2.safetensors"), *command[8:]]
    elsewhere = subprocess.run([*elsewhere, "--checkpoint", str(tmp_path / "work" / "state.ckpt")],
                               capture_output=True, text=True, timeout=300)
    assert elsewhere.returncode == 0 and (tmp_path / "work" / "state.ckpt").is_file(), elsewhere.stderr


def test_training_state_is_never_written_inside_the_package(small_training_folder, tmp_path):
    import ciidefence

    package = Path(ciidefence.__file__).parent
    config = TrainingConfig(steps=1, batch_size=2, validation_images=2)
    for out, checkpoint in ((package / "data" / "new.safetensors", None),
                            (tmp_path / "m.safetensors", package / "state.ckpt")):
        with pytest.raises(ConfigError, match="inside the ciidefence package"):
            Trainer(small_training_folder, out, DeepFillConfig(width=8), config, torch.device("cpu"),
                    checkpoint=checkpoint)
    assert not list(package.rglob("*.ckpt"))


def test_bpda_through_the_inpainter_has_gradients_inside_and_outside_the_boxes(classifier, photo, tmp_path):
    torch.manual_seed(0)
    model = DeepFill(DeepFillConfig(width=8))
    for parameter in model.decoder[-1].parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    save_deepfill(model, tmp_path / "m.safetensors")
    config = CIIDefenceConfig(inpainter="deepfill", inpainter_model=str(tmp_path / "m.safetensors"), half_width=8)
    defence = CIIDefence(classifier, config)
    image = classifier.prepare(photo)
    mask = purify(image, classifier, config).mask[0]
    preprocessor = ARTPreprocessor(defence, "inpainter")
    leaf = image.clone().requires_grad_(True)
    output, _ = preprocessor.forward(leaf)
    weights = torch.rand_like(image)
    (output * weights).sum().backward()
    gradient = leaf.grad.abs().sum(dim=1)[0]
    assert gradient[mask].sum() > 0 and gradient[~mask].sum() > 0
    identity = ARTPreprocessor(defence, "differentiable")
    other = image.clone().requires_grad_(True)
    (identity.forward(other)[0] * weights).sum().backward()
    assert not torch.allclose(other.grad, leaf.grad)  # the network changes the gradient in the boxes


def test_the_shipped_weights_load_and_fill_better_than_a_constant(sample_paths, classifier):
    from ciidefence import load_image
    from ciidefence.inpainting import inpaint
    from ciidefence.inpainting.training import masked_psnr

    model = load_deepfill()  # from the package, no download
    assert model.config.coarse == "harmonic"
    views = torch.cat([classifier.prepare(load_image(p)[None]) for p in sample_paths])
    masks = torch.zeros(len(views), 224, 224, dtype=torch.bool)
    masks[:, 100:117, 60:77] = True
    masks[:, 30:39, 150:159] = True
    filled = inpaint(views, masks, "deepfill")
    holes = masks[:, None].float()
    constant = torch.where(masks[:, None], views.mean(dim=(2, 3), keepdim=True), views)
    assert masked_psnr(filled, views, holes) > masked_psnr(constant, views, holes) + 3


def test_bfloat16_fills_like_float32_and_is_part_of_the_defences_identity(sample_paths, classifier):
    from ciidefence import load_image
    from ciidefence.defences.registry import defence_params
    from ciidefence.inpainting import inpaint
    from ciidefence.inpainting.training import masked_psnr

    views = torch.cat([classifier.prepare(load_image(p)[None]) for p in sample_paths[:4]])
    masks = torch.zeros(len(views), 224, 224, dtype=torch.bool)
    masks[:, 100:117, 60:77] = True
    masks[:, 0:17, 200:217] = True  # at the edge
    exact = inpaint(views, masks, "deepfill")
    fast = inpaint(views, masks, "deepfill", precision="bfloat16")
    assert fast.dtype == torch.float32 and torch.equal(fast[~masks[:, None].expand_as(fast)],
                                                       views[~masks[:, None].expand_as(views)])
    holes = masks[:, None].float()
    assert abs(masked_psnr(fast, views, holes) - masked_psnr(exact, views, holes)) < 0.1
    assert 0 < (fast - exact).abs().max() < 0.1

    default = CIIDefenceConfig()
    assert "inpainter_precision" not in default.to_dict()  # digests of configurations from before it stay valid
    bf16 = CIIDefenceConfig(inpainter_precision="bfloat16")
    assert CIIDefenceConfig(**bf16.to_dict()) == bf16 and CIIDefenceConfig(**default.to_dict()) == default
    assert defence_params("ciid", bf16) != defence_params("ciid", default)
    for bad in ({"inpainter_precision": "float16"}, {"inpainter": "telea", "inpainter_precision": "bfloat16"}):
        with pytest.raises(ConfigError, match="precision"):
            CIIDefenceConfig(**bad)


def test_a_holes_fill_does_not_depend_on_the_other_holes_in_the_batch():
    model = DeepFill(DeepFillConfig(width=8))
    torch.nn.init.normal_(model.decoder[-1].weight, std=0.1)  # a network whose fill is not the coarse one
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(2, 96, 96, dtype=torch.bool)
    masks[0, 40:49, 40:49] = True
    masks[1, 10:80, 10:80] = True  # a large hole: a much larger window
    alone = inpaint_with_network(images[:1], masks[:1], model)
    together = inpaint_with_network(images, masks, model)
    assert torch.allclose(together[:1], alone, atol=1e-5)
    assert window_side(70) == 168 and window_side(9) == 32 and window_side(17) == 52


def _boxes(seed: int, count: int, size: int = 96) -> torch.Tensor:
    """Masks of a few square boxes, some touching each other or the edge, as CIIDefence makes them."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(count, size, size, dtype=torch.bool)
    for index in range(count):
        for _ in range(4):
            half = int(torch.randint(2, 9, (1,), generator=generator))
            row, col = (int(v) for v in torch.randint(0, size, (2,), generator=generator))
            masks[index, max(row - half, 0) : row + half + 1, max(col - half, 0) : col + half + 1] = True
    return masks


def test_windows_split_over_several_network_calls_fill_as_one_call_does():
    masks = _boxes(3, 3)
    images = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    module = WindowedDeepFill(load_deepfill())
    windows = hole_windows(masks)
    with torch.no_grad():
        whole = module.fill(images, masks, windows)
        module.window_pixels_per_call = 1  # one window per call
        split = module.fill(images, masks, windows)
    assert len(windows) > 3 and torch.allclose(whole, split, atol=1e-5)


def test_the_torch_window_finder_agrees_with_scipys():
    masks = _boxes(0, 6)
    masks[0, 0:5, 0:5] = True  # a hole in a corner
    masks[1, 40:50, 40:42] = True
    masks[1, 49:51, 42:60] = True  # an L-shaped hole
    masks[2] = False  # an image with no hole
    assert hole_windows_torch(masks) == hole_windows(masks)
    assert len(hole_windows(masks)) > 10


def test_a_fill_does_not_depend_on_what_was_in_the_hole():
    model = DeepFill(DeepFillConfig(width=8))
    torch.nn.init.normal_(model.decoder[-1].weight, std=0.1)
    masks = _boxes(1, 3)
    masks[:, 0:9, 30:39] = True  # at the edge, where the window reaches past the image
    images = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    erased = torch.where(masks[:, None], 0.0, images)
    assert torch.equal(inpaint_with_network(images, masks, model), inpaint_with_network(erased, masks, model))


def test_the_exported_model_fills_as_the_deepfill_inpainter_does(tmp_path):
    from ciidefence.inpainting import inpaint

    model = DeepFill(DeepFillConfig(width=8))
    torch.nn.init.normal_(model.decoder[-1].weight, std=0.1)
    save_deepfill(model, tmp_path / "m.safetensors")
    export_deepfill(tmp_path / "m.pt", tmp_path / "m.safetensors")
    masks = _boxes(2, 3)
    images = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    exported = inpaint(images, masks, "learned", model_path=tmp_path / "m.pt", trust=True)
    eager = inpaint(images, masks, "deepfill", model_path=tmp_path / "m.safetensors")
    assert not torch.equal(exported, images)
    assert torch.allclose(exported, eager, atol=1e-5)


def test_the_export_command_writes_the_shipped_model_and_refuses_bad_weights(tmp_path):
    from ciidefence.inpainting import inpaint

    command = [sys.executable, "-m", "ciidefence.cli.main", "export-inpainter", "--out", str(tmp_path / "m.pt")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    masks = _boxes(3, 2)
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(inpaint(images, masks, "learned", model_path=tmp_path / "m.pt", trust=True),
                          inpaint(images, masks, "deepfill"), atol=1e-5)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr
    bad = subprocess.run([*command, "--overwrite", "--weights", str(tmp_path / "missing.safetensors")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no such inpainter file" in bad.stderr
