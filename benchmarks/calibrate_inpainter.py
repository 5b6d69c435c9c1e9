"""Which DeepFill variant learns fastest on this machine: train each for the same wall time, compare.

Variants: the coarse stage (harmonic fill or the paper's learned network) and
the loss (discounted L1 alone, or with the WGAN-GP critics). Each trains for
``--minutes`` on the training folder and is scored by the masked PSNR of its
fills on the held-back images, beside the harmonic fill's.

    python benchmarks/calibrate_inpainter.py --data ../shared/data/inpainting-train --minutes 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ciidefence.inpainting.deepfill import DeepFillConfig
from ciidefence.inpainting.training import Trainer, TrainingConfig

VARIANTS = {
    "harmonic-coarse/L1": (DeepFillConfig(coarse="harmonic"), 0.0),
    "learned-coarse/L1": (DeepFillConfig(coarse="network"), 0.0),
    "harmonic-coarse/L1+WGAN-GP-0.001": (DeepFillConfig(coarse="harmonic"), 0.001),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'variant':40s} {'steps':>6s} " + " ".join(f"{'w=' + str(w):>14s}" for w in (4, 8, 12, 16)))
    for name in args.variants.split(","):
        model_config, adversarial = VARIANTS[name]
        with tempfile.TemporaryDirectory() as folder:
            trainer = Trainer(args.data, Path(folder) / "m.safetensors", model_config,
                              TrainingConfig(steps=10**9, adversarial_weight=adversarial), torch.device("cpu"))
            deadline = time.monotonic() + 60 * args.minutes
            steps = 0
            while time.monotonic() < deadline:
                trainer.step()
                steps += 1
            scores = trainer.validate()
        print(f"{name:40s} {steps:6d} " + " ".join(
            f"{scores[f'psnr_w{w}']:6.2f} ({scores[f'psnr_w{w}'] - scores[f'harmonic_w{w}']:+.2f})"
            for w in (4, 8, 12, 16)), flush=True)
    print("masked PSNR in dB on the held-back images (in brackets: minus the harmonic fill's)")


if __name__ == "__main__":
    main()
