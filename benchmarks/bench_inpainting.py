"""Inpainting quality on CIIDefence's own holes: masked PSNR and SSIM of every inpainter, and its speed.

For each image, the classifier's 224 px view and CIIDefence's masks there (the
boxes around the top-3 CAMs' peaks, 2 per map, at each half width w); every
inpainter fills them, and the filled pixels are compared with the originals.

    python benchmarks/bench_inpainting.py --data ../shared/data/imagenet-sample --limit 100
    python benchmarks/bench_inpainting.py --data ../shared/data/imagenet-sample --json > inpainting.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity
from tqdm import tqdm

from ciidefence import load_classifier, load_image
from ciidefence.evaluation.data import load_dataset
from ciidefence.inpainting import INPAINTER_PRECISIONS, inpaint
from ciidefence.regions import class_activation_maps, select_regions

INPAINTERS = ("telea", "navier-stokes", "biharmonic", "harmonic", "deepfill")


def masked_scores(filled: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """PSNR (dB) and mean SSIM of the masked pixels of one ``(3, S, S)`` image."""
    error = float(((filled - original) ** 2)[:, mask].mean())
    psnr = 10 * math.log10(1 / max(error, 1e-10))
    _, ssim_map = structural_similarity(original.permute(1, 2, 0).numpy(), filled.permute(1, 2, 0).numpy(),
                                        channel_axis=2, data_range=1.0, full=True)
    return psnr, float(ssim_map.mean(axis=2)[mask.numpy()].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--half-widths", default="4,8,12,16")
    parser.add_argument("--inpainters", default=",".join(INPAINTERS))
    parser.add_argument("--model", default=None, help="DeepFill weights [default: the shipped ones]")
    parser.add_argument("--inpainter-precision", choices=INPAINTER_PRECISIONS, default="float32",
                        help="arithmetic of the deepfill network")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", default=None, help="PNG with a few examples side by side")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    half_widths = [int(w) for w in args.half_widths.split(",")]
    inpainters = args.inpainters.split(",")
    classifier = load_classifier()
    items = load_dataset(args.data)[: args.limit]
    results: dict[tuple[str, int], dict[str, list[float]]] = {
        (name, w): {"psnr": [], "ssim": [], "ms": []} for name in inpainters for w in half_widths}
    examples = []
    for item in tqdm(items, file=sys.stderr, desc="inpainting"):
        view = classifier.prepare(load_image(item.path)[None])
        with torch.no_grad():
            evidence = class_activation_maps(classifier, view, 3)
        for w in half_widths:
            mask, _, _ = select_regions(classifier, view, evidence, "cam", 3, 2, w, 0.1)
            if not mask.any():
                continue
            row = []
            for name in inpainters:
                started = time.perf_counter()
                with torch.no_grad():
                    filled = (inpaint(view, mask, name, 3.0, args.model, args.inpainter_precision)
                              if name == "deepfill" else inpaint(view, mask, name, 3.0))
                results[(name, w)]["ms"].append(1000 * (time.perf_counter() - started))
                psnr, ssim = masked_scores(filled[0], view[0], mask[0])
                results[(name, w)]["psnr"].append(psnr)
                results[(name, w)]["ssim"].append(ssim)
                row.append(filled[0])
            if len(examples) < 4 and w == half_widths[len(half_widths) // 2]:
                examples.append((view[0], mask[0], row, w))
    def mean(name: str, w: int) -> dict:
        found = results[(name, w)]
        return {key: statistics.fmean(values) if values else None for key, values in found.items()} | {
            "images": len(found["psnr"])}

    summary = {name: {str(w): mean(name, w) for w in half_widths} for name in inpainters}
    if args.json:
        print(json.dumps({"data": str(Path(args.data)), "images": len(items), "half_widths": half_widths,
                          "deepfill_precision": args.inpainter_precision, "inpainters": summary}, indent=2))
    else:
        print(f"{len(items)} images; mean masked PSNR (dB) / SSIM / ms per image at the 224 px view; deepfill in "
              f"{args.inpainter_precision}")
        print(f"{'inpainter':14s} " + " ".join(f"{'w=' + str(w):>22s}" for w in half_widths))
        for name in inpainters:
            cells = [summary[name][str(w)] for w in half_widths]
            print(f"{name:14s} " + " ".join(f"{c['psnr']:7.2f} {c['ssim']:6.3f} {c['ms']:7.1f}" for c in cells))
    if args.figure and examples:
        _figure(examples, inpainters, args.figure)


def _figure(examples, inpainters, path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2.2 * (len(inpainters) + 2), 2.3 * len(examples)), layout="constrained")
    axes = figure.subplots(len(examples), len(inpainters) + 2, squeeze=False)
    for row, (view, mask, filled, w) in zip(axes, examples, strict=True):
        ys, xs = np.nonzero(mask.numpy())
        cy, cx = int(ys.mean()), int(xs.mean())
        top, left = max(0, cy - 40), max(0, cx - 40)
        crop = (slice(top, top + 80), slice(left, left + 80))
        holed = view.clone()
        holed[:, mask] = 0
        for axis, (title, image) in zip(row, [("original", view), (f"holes (w={w})", holed),
                                              *zip(inpainters, filled, strict=True)], strict=True):
            axis.imshow(image.permute(1, 2, 0).numpy()[crop].clip(0, 1))
            axis.set_title(title, fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
