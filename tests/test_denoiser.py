"""The learned Gaussian denoiser: shape and range, safetensors only, and its trainer (the shared loop)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ciidefence.denoising.learned import (
    DenoiserConfig,
    DenoiserFront,
    GaussianDenoiser,
    load_denoiser,
    save_denoiser,
)
from ciidefence.errors import CheckpointError, ConfigError
from ciidefence.training.denoiser import DenoiserTrainer, DenoiserTrainingConfig
from conftest import REPO

TRAINING = REPO / "tests" / "data" / "train"


def trained_a_little() -> GaussianDenoiser:
    torch.manual_seed(0)
    model = GaussianDenoiser(DenoiserConfig(width=8, levels=2))
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    return model.eval()


@pytest.mark.parametrize("shape", [(2, 3, 224, 224), (1, 3, 37, 51)])
def test_the_denoiser_keeps_shape_and_range_at_any_size(shape):
    model = trained_a_little()
    images = torch.rand(shape)
    with torch.no_grad():
        output = model(images, torch.tensor([0.25] * shape[0]))
    assert output.shape == images.shape and output.min() >= 0 and output.max() <= 1
    assert not torch.equal(output, images)
    assert torch.equal(GaussianDenoiser(DenoiserConfig(width=8))(images, 0.5), images.clamp(0, 1))  # starts at identity


def test_the_denoiser_loads_from_safetensors_alone_and_refuses_anything_else(tmp_path):
    model = trained_a_little()
    save_denoiser(model, tmp_path / "d.safetensors")
    loaded = load_denoiser(tmp_path / "d.safetensors")
    assert loaded.config == model.config
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images, 0.12), model(images, 0.12))
    torch.save(model.state_dict(), tmp_path / "d.pt")  # a pickle: never loaded
    with pytest.raises(CheckpointError, match="not denoiser weights in safetensors format"):
        load_denoiser(tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="no such denoiser weights file"):
        load_denoiser(tmp_path / "missing.safetensors")
    broken = trained_a_little()
    with torch.no_grad():
        next(broken.parameters())[0] = float("nan")
    save_denoiser(broken, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="NaN"):
        load_denoiser(tmp_path / "nan.safetensors")


def test_the_denoiser_as_a_front_checks_its_input_and_level():
    front = DenoiserFront(trained_a_little(), 0.25)
    assert front(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    with pytest.raises(ConfigError):
        DenoiserFront(trained_a_little(), 0.0)


def test_mse_then_stability_training_resumes_where_it_stopped(classifier, tmp_path):
    config = DenoiserTrainingConfig(steps=4, stability_from=2, batch_size=2, crop=32, stability_batch_size=2,
                                    validation_images=2)
    out = tmp_path / "d.safetensors"
    first = DenoiserTrainer(TRAINING, out, DenoiserConfig(width=8), config, torch.device("cpu"), classifier)
    losses = []
    for _ in range(3):
        losses.append(first.step())
        first.state.step += 1
    assert list(losses[0]) == ["mse"] and list(losses[2]) == ["stability"]
    first.save()
    with pytest.raises(ConfigError, match="--resume"):
        DenoiserTrainer(TRAINING, out, DenoiserConfig(width=8), config, torch.device("cpu"), classifier)
    with pytest.raises(ConfigError, match="another architecture"):
        DenoiserTrainer(TRAINING, out, DenoiserConfig(width=16), config, torch.device("cpu"), classifier, resume=True)
    again = DenoiserTrainer(TRAINING, out, DenoiserConfig(width=8), config, torch.device("cpu"), classifier,
                            resume=True)
    assert again.state.step == 3
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                  again.model.state_dict().values(), strict=True))
    history = again.train(validate_every=2)
    assert again.state.step == 4 and set(history[-1]) >= {"agree_s0.25", "bare_s0.5", "psnr_s0.12"}
    assert load_denoiser(out).config == DenoiserConfig(width=8)


def test_the_training_command_writes_weights_and_refuses_a_checkpoint_in_the_package(tmp_path):
    command = [sys.executable, "-m", "ciidefence.cli.main", "train-denoiser", "--data", str(TRAINING), "--out",
               str(tmp_path / "d.safetensors"), "--steps", "2", "--stability-from", "1", "--batch-size", "2",
               "--crop", "32", "--stability-batch-size", "2", "--width", "8", "--validate-every", "2",
               "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "agreement" in result.stdout and load_denoiser(tmp_path / "d.safetensors").config.width == 8
    import ciidefence

    inside = REPO / "src" / "ciidefence" / "state.ckpt"
    package = subprocess.run([*command, "--checkpoint", str(inside)], capture_output=True, text=True, timeout=300)
    assert package.returncode == 2 and "inside the ciidefence package" in package.stderr
    assert not inside.exists() and ciidefence.__file__


# --- the trainer's files: checked before the first step, written whole, never through a link -------------


def _trainer(classifier, out, resume=False, steps=2, learning_rate=1e-3, **kwargs):
    config = DenoiserTrainingConfig(steps=steps, stability_from=steps, batch_size=2, crop=32, validation_images=2,
                                    learning_rate=learning_rate)
    return DenoiserTrainer(TRAINING, out, DenoiserConfig(width=8), config, torch.device("cpu"), classifier,
                           resume=resume, **kwargs)


def test_the_trainer_refuses_bad_outputs_before_the_first_step(classifier, tmp_path):
    with pytest.raises(ConfigError, match="safetensors"):
        _trainer(classifier, TRAINING / sorted(p.name for p in TRAINING.iterdir())[0])  # an input image
    existing = tmp_path / "old.safetensors"
    existing.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="exists"):
        _trainer(classifier, existing)
    assert existing.read_bytes() == b"keep me"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot make the folder"):
        _trainer(classifier, blocker / "d.safetensors")
    outside = tmp_path / "outside"
    (tmp_path / "linked.safetensors").symlink_to(outside)
    with pytest.raises(ConfigError, match="symbolic link"):
        _trainer(classifier, tmp_path / "linked.safetensors")
    (tmp_path / "d.safetensors.ckpt").symlink_to(outside)
    with pytest.raises(ConfigError, match="symbolic link"):
        _trainer(classifier, tmp_path / "d.safetensors")
    assert not outside.exists()


def test_a_planted_partial_file_is_never_written_through(classifier, tmp_path):
    outside = tmp_path / "outside"
    for name in ("d.safetensors.partial", "d.safetensors.ckpt.partial"):
        (tmp_path / name).symlink_to(outside)
    trainer = _trainer(classifier, tmp_path / "d.safetensors")
    trainer.train(validate_every=2)
    assert not outside.exists() and load_denoiser(tmp_path / "d.safetensors").config.width == 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_a_corrupt_finished_or_nan_checkpoint_gives_one_line(classifier, tmp_path):
    out = tmp_path / "d.safetensors"
    checkpoint = tmp_path / "d.safetensors.ckpt"
    checkpoint.write_bytes(b"\x80\x04garbage, not a checkpoint")
    with pytest.raises(ConfigError, match="not a training checkpoint"):
        _trainer(classifier, out, resume=True)
    checkpoint.unlink()
    _trainer(classifier, out).train(validate_every=2)
    with pytest.raises(ConfigError, match="nothing left to train"):
        _trainer(classifier, out, resume=True)
    saved = torch.load(checkpoint, weights_only=True)
    next(iter(saved["model"].values())).fill_(float("nan"))
    torch.save(saved, checkpoint)
    with pytest.raises(ConfigError, match="NaN"):
        _trainer(classifier, out, resume=True, steps=4)


def test_training_that_diverges_stops_with_one_line_and_keeps_the_last_checkpoint(classifier, tmp_path):
    trainer = _trainer(classifier, tmp_path / "d.safetensors", steps=3)
    trainer.train(validate_every=10, checkpoint_minutes=1e-9)  # a checkpoint after every step
    trainer.config = DenoiserTrainingConfig(steps=6, stability_from=6, batch_size=2, crop=32, validation_images=2)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("inf"))
    with pytest.raises(ConfigError, match="diverged at step 4.*is kept"):
        trainer.train(validate_every=10)
    assert torch.load(tmp_path / "d.safetensors.ckpt", weights_only=True)["step"] == 3


def test_a_loss_that_blows_up_without_becoming_infinite_stops_training():
    import random

    from ciidefence.training.trainer import BlowUpWatch

    rng = random.Random(0)
    # the run in docs/JOURNAL.md: MSE falling from 0.036 to 0.006 over 1,200 steps, noisy from batch to batch ...
    falling = [0.036 * (0.006 / 0.036) ** (step / 1200) * rng.uniform(0.5, 1.6) for step in range(1200)]
    watch = BlowUpWatch()
    assert not any(watch.blew_up(loss) for loss in falling)
    # ... then 0.31 and staying there: caught within a few dozen steps
    tripped = [watch.blew_up(0.31 * rng.uniform(0.9, 1.1)) for _ in range(100)]
    assert True in tripped and tripped.index(True) < 60
    calm = BlowUpWatch()  # a noisy loss on a plateau never trips
    assert not any(calm.blew_up(5 * rng.uniform(0.3, 2.0)) for _ in range(3000))


def test_training_can_start_from_saved_weights_and_names_them(classifier, tmp_path):
    start = tmp_path / "start.safetensors"
    save_denoiser(trained_a_little(), start)
    out = tmp_path / "tuned.safetensors"
    tuned = _trainer(classifier, out, init_from=start)
    assert all(torch.equal(a, b) for a, b in zip(tuned.model.state_dict().values(),
                                                  trained_a_little().state_dict().values(), strict=True))
    tuned.train(validate_every=2)
    from safetensors import safe_open

    from ciidefence.denoising.learned import weights_digest

    with safe_open(str(out), "pt") as handle:
        assert handle.metadata()["init_from"] == weights_digest(start)
    resumed = _trainer(classifier, out, resume=True, steps=3)  # the start is remembered across --resume
    assert resumed.init_digest == weights_digest(start)


def test_the_training_command_refuses_an_architecture_beside_init_from(tmp_path):
    start = tmp_path / "start.safetensors"
    save_denoiser(trained_a_little(), start)
    result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "train-denoiser", "--data", str(TRAINING),
                             "--out", str(tmp_path / "d.safetensors"), "--init-from", str(start), "--width", "8"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().endswith("drop --width and --levels")


@pytest.mark.parametrize("stability_from", [1, 0], ids=["mse", "stability"])
def test_pixels_pushed_out_of_range_still_pull_the_denoiser_back(classifier, tmp_path, stability_from):
    # Trained through the clamp, a denoiser whose output left [0, 1] got no gradient and sat at the noisy PSNR.
    config = DenoiserTrainingConfig(steps=1, stability_from=stability_from, batch_size=2, crop=32,
                                    stability_batch_size=2, validation_images=2)
    trainer = DenoiserTrainer(TRAINING, tmp_path / "d.safetensors", DenoiserConfig(width=8), config,
                              torch.device("cpu"), classifier)
    with torch.no_grad():
        trainer.model.out.bias.fill_(2.0)  # every output pixel far above 1
    trainer.step()
    assert (trainer.model.out.bias < 2.0).all()
    assert trainer.model(torch.full((1, 3, 16, 16), 0.5), 0.25).eq(1).all()  # what it gives is still clamped
