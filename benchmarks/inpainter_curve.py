"""The training curve of the DeepFill-style inpainter, from its checkpoint: validation PSNR against steps.

    python benchmarks/inpainter_curve.py --checkpoint src/ciidefence/data/deepfill.safetensors.ckpt \\
        --figure docs/figures/deepfill_training.png
"""

from __future__ import annotations

import argparse

import torch

SIZES = (4, 8, 12, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--figure", default=None)
    parser.add_argument("--every", type=int, default=1000, help="print every N steps")
    args = parser.parse_args()
    history = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["history"]
    print(f"{'step':>6s} {'minutes':>8s} " + " ".join(f"{'w=' + str(w) + ' (vs harmonic)':>22s}" for w in SIZES))
    for record in history:
        if record["step"] % args.every == 0 or record is history[-1]:
            print(f"{record['step']:6d} {record['seconds'] / 60:8.1f} " + " ".join(
                f"{record[f'psnr_w{w}']:8.2f} dB ({record[f'psnr_w{w}'] - record[f'harmonic_w{w}']:+.2f})"
                for w in SIZES))
    if args.figure:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(6.4, 4), layout="constrained")
        axis = figure.subplots()
        steps = [record["step"] for record in history]
        for w in SIZES:
            axis.plot(steps, [r[f"psnr_w{w}"] - r[f"harmonic_w{w}"] for r in history], label=f"w = {w}")
        axis.axhline(0, color="0.5", lw=0.8)
        axis.set_xlabel("training step (batch 16)")
        axis.set_ylabel("masked PSNR minus the harmonic fill's (dB)")
        axis.set_title("DeepFill-style inpainter: validation on held-back training images", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        figure.savefig(args.figure, dpi=130)


if __name__ == "__main__":
    main()
