"""``ciid train-inpainter`` and ``ciid export-inpainter``: train the DeepFill-style inpainter, export it."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from .options import SEED, THREADS
from .session import CommandFailed, report_errors, resolve_device, say, set_threads, warn


@click.command("train-inpainter")
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="Folder of training images, any layout (e.g. ../shared/data/inpainting-train or ImageNet's train/). "
                   "Never the evaluation images.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Weights file to write (.safetensors).")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False), default=None,
              help="Training state to write every few minutes and --resume from, a work file never inside the "
                   "package [default: OUT.ckpt].")
@click.option("--steps", type=click.IntRange(1), default=3000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--width", type=click.IntRange(4), default=24, show_default=True, help="Channels of the first layer.")
@click.option("--coarse", type=click.Choice(["harmonic", "network"]), default="harmonic", show_default=True,
              help="Coarse stage: the parameter-free harmonic fill, or the paper's learned network.")
@click.option("--learning-rate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=2e-4,
              show_default=True)
@click.option("--adversarial-weight", type=click.FloatRange(0), default=0.001, show_default=True,
              help="Weight of the WGAN-GP loss (global and local critics); 0 trains on the discounted L1 alone.")
@click.option("--validate-every", type=click.IntRange(1), default=200, show_default=True)
@click.option("--checkpoint-minutes", type=click.FloatRange(0, min_open=True), default=5.0, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True)
@click.option("--threads", type=THREADS, default=None, help="CPU threads [default: all available].")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint.")
@report_errors
def train_inpainter(data, out_path, checkpoint_path, steps, batch_size, width, coarse, learning_rate,
                    adversarial_weight, validate_every, checkpoint_minutes, device, threads, seed, resume) -> None:
    """Train the DeepFill-style inpainter on holes shaped like CIIDefence's.

    Shows the losses and the validation PSNR of the filled pixels (held-back
    images) against the harmonic fill's; writes OUT (safetensors, loadable
    with --inpainter deepfill --inpainter-model OUT) and a checkpoint every
    few minutes, so a killed run resumes with --resume.
    """
    from ..inpainting.deepfill import DeepFillConfig
    from ..inpainting.training import Trainer, TrainingConfig

    set_threads(threads)
    trainer = Trainer(data, out_path, DeepFillConfig(width=width, coarse=coarse),
                      TrainingConfig(steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                                     adversarial_weight=adversarial_weight, seed=seed),
                      resolve_device(device), resume=resume, checkpoint=checkpoint_path)
    warn(f"training on {len(trainer.train_images)} images, validating on {len(trainer.validation_paths)}; "
         f"{sum(p.numel() for p in trainer.model.parameters()):,} parameters")

    from ..progress import tqdm_bar

    history = trainer.train(lambda done, total: tqdm_bar(total, "train", "step", done), checkpoint_minutes,
                            validate_every)
    if history:
        last = history[-1]
        say("step {step}: masked PSNR ".format(**last) + ", ".join(
            f"w={w} {last[f'psnr_w{w}']:.2f} dB (harmonic {last[f'harmonic_w{w}']:.2f})" for w in (4, 8, 12, 16)))
    warn(f"wrote {Path(out_path)}")


@click.command("export-inpainter")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="TorchScript file to write (.pt), for --inpainter learned --inpainter-model OUT.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Weights from train-inpainter [default: the shipped ones].")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@report_errors
def export_inpainter(out_path, weights, overwrite) -> None:
    """Write the DeepFill-style inpainter as TorchScript, LaMa's export convention: model(image, mask) -> image.

    The file runs without ciidefence (torch.jit.load) and, in the learned
    slot, fills as --inpainter deepfill does on images whose sides are
    multiples of 8.
    """
    from ..files import check_writable_folder, refuse_link
    from ..inpainting.deepfill import export_deepfill

    out = Path(out_path)
    refuse_link(out)
    if out.exists() and not overwrite:
        raise CommandFailed(f"--out {out} exists; pass --overwrite to replace it", exit_code=2)
    check_writable_folder(out.parent, "--out")
    export_deepfill(out, weights)
    warn(f"wrote {Path(out_path)}")


@click.command("train-denoiser")
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="Folder of training images, any layout (e.g. ../shared/data/inpainting-train). Never the "
                   "evaluation images.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Weights file to write (.safetensors), for --denoiser learned --denoiser-model OUT.")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False), default=None,
              help="Training state to write every few minutes and --resume from, a work file never inside the "
                   "package [default: OUT.ckpt].")
@click.option("--model", default="efficientnet_lite0", show_default=True,
              help="The frozen classifier of the stability objective and of the validation.")
@click.option("--steps", type=click.IntRange(1), default=4000, show_default=True)
@click.option("--stability-from", type=click.IntRange(0), default=2000, show_default=True,
              help="Step from which the stability objective (through the classifier) replaces the MSE.")
@click.option("--sigmas", default="0.12,0.25,0.5", show_default=True,
              help="Noise levels trained on (each image draws one), in [0, 1] pixel units.")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True, help="MSE phase.")
@click.option("--crop", type=click.IntRange(16), default=128, show_default=True, help="MSE phase's crop side.")
@click.option("--learning-rate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=1e-3,
              show_default=True, help="MSE phase.")
@click.option("--stability-batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--stability-learning-rate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=1e-4,
              show_default=True)
@click.option("--stability-mse-weight", type=click.FloatRange(0), default=100.0, show_default=True,
              help="Weight of the MSE kept beside the stability objective, so the denoiser stays one (0: none).")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None,
              help="Start from these denoiser weights (.safetensors, e.g. the shipped ones) instead "
                   "of random ones: fine-tuning, say for one sigma. The architecture is the file's.")
@click.option("--width", type=click.IntRange(4), default=32, show_default=True,
              help="Channels at half resolution, doubled at each level.")
@click.option("--levels", type=click.IntRange(1, 4), default=2, show_default=True, help="Downsamplings.")
@click.option("--validate-every", type=click.IntRange(1), default=200, show_default=True)
@click.option("--checkpoint-minutes", type=click.FloatRange(0, min_open=True), default=5.0, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True)
@click.option("--threads", type=THREADS, default=None, help="CPU threads [default: all available].")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint.")
@report_errors
def train_denoiser(data, out_path, checkpoint_path, model, steps, stability_from, sigmas, batch_size, crop,
                   learning_rate, stability_batch_size, stability_learning_rate, stability_mse_weight, init_from, width,
                   levels, validate_every, checkpoint_minutes, device, threads, seed, resume) -> None:
    """Train the Gaussian denoiser of denoised smoothing (Salman et al. 2020): MSE, then the stability objective.

    Shows the loss and, on held-back images with fixed noise at each sigma,
    how often the classifier agrees with its clean prediction through the
    denoiser (beside the bare noisy image's); writes OUT (safetensors) and a
    checkpoint every few minutes, so a killed run resumes with --resume.
    """
    from ..attacks import parse_eps
    from ..denoising.learned import DenoiserConfig
    from ..models import load_classifier
    from ..progress import tqdm_bar
    from ..training.denoiser import DenoiserTrainer, DenoiserTrainingConfig
    from .options import split_names

    context = click.get_current_context()
    if init_from is not None and any(context.get_parameter_source(name) is ParameterSource.COMMANDLINE
                                     for name in ("width", "levels")):
        raise CommandFailed("--init-from takes the architecture of its weights file: drop --width and --levels",
                            exit_code=2)
    set_threads(threads)
    torch_device = resolve_device(device)
    config = DenoiserTrainingConfig(steps=steps, stability_from=stability_from, batch_size=batch_size, crop=crop,
                                    learning_rate=learning_rate, stability_batch_size=stability_batch_size,
                                    stability_learning_rate=stability_learning_rate,
                                    stability_mse_weight=stability_mse_weight,
                                    sigmas=tuple(parse_eps(s) for s in split_names(sigmas)), seed=seed)
    trainer = DenoiserTrainer(data, out_path, DenoiserConfig(width=width, levels=levels), config, torch_device,
                              load_classifier(model), resume=resume, checkpoint=checkpoint_path, init_from=init_from)
    warn(f"training on {len(trainer.train_paths)} images, validating on {len(trainer.validation[0][1])}; "
         f"{sum(p.numel() for p in trainer.model.parameters()):,} parameters")
    history = trainer.train(lambda done, total: tqdm_bar(total, "train", "step", done), checkpoint_minutes,
                            validate_every)
    if history:
        last = history[-1]
        say(f"step {last['step']}: " + ", ".join(
            f"σ={s:g} agreement {100 * last[f'agree_s{s:g}']:.1f}% (bare {100 * last[f'bare_s{s:g}']:.1f}%), "
            f"PSNR {last[f'psnr_s{s:g}']:.2f} dB" for s in config.sigmas))
    warn(f"wrote {Path(out_path)}")
