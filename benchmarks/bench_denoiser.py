"""One-draw noisy top-1 of the bare classifier and of its fronts, per noise level: what smoothing starts from.

For each σ and each image, one draw of Gaussian noise (the first draw that
``ciid certify`` makes for that image, seeded by the seed, the model, σ and
the image) is added at the classifier's 224 px view and clamped to [0, 1];
the classifier is then scored bare, behind CIIDefence's wavelet shrinkage at
that σ, and behind the learned Gaussian denoiser. Prints top-1, the PSNR of
what reaches the classifier against the clean view, and milliseconds per
image of each front::

    python benchmarks/bench_denoiser.py --limit 100 [--denoiser-model W.safetensors] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from ciidefence import load_classifier
from ciidefence.defences.config import CIIDefenceConfig
from ciidefence.evaluation.certification import build_front
from ciidefence.randomness import seeded_generator
from common import add_data_option, classifier_views, sample_images

FRONTS = ("none", "wavelet", "learned")


def psnr(output: torch.Tensor, clean: torch.Tensor) -> float:
    error = torch.mean((output - clean) ** 2, dim=(1, 2, 3))
    return float(torch.mean(10 * torch.log10(1 / error.clamp_min(1e-12))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--sigmas", default="0.12,0.25,0.5")
    parser.add_argument("--denoiser-model", default=None, help="weights of the learned denoiser [default: shipped]")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    classifier = load_classifier()
    paths, labels = sample_images(args.limit, args.data)
    views = classifier_views(classifier, paths)
    keys = [path.name for path in paths]
    found = []
    for sigma in (float(s) for s in args.sigmas.split(",")):
        noisy = torch.stack([(view + sigma * torch.randn(view.shape, generator=seeded_generator(
            args.seed, classifier.name, sigma, key))).clamp(0, 1) for view, key in zip(views, keys, strict=True)])
        for name in FRONTS:
            front = build_front(name, classifier, sigma, CIIDefenceConfig(), args.denoiser_model)
            outputs, seconds = [], 0.0
            with torch.no_grad():
                for start in range(0, len(noisy), args.batch_size):
                    batch = noisy[start : start + args.batch_size]
                    began = time.perf_counter()
                    outputs.append(front(batch))
                    seconds += time.perf_counter() - began
                cleaned = torch.cat(outputs)
                predictions = torch.cat([classifier(cleaned[s : s + args.batch_size]).argmax(1)
                                         for s in range(0, len(cleaned), args.batch_size)])
            correct = int((predictions == labels).sum())
            found.append({"sigma": sigma, "front": name, "images": len(labels), "correct": correct,
                          "top1": correct / len(labels), "psnr": psnr(cleaned, views),
                          "ms_per_image": 1000 * seconds / len(noisy)})
    if args.json:
        print(json.dumps(found, indent=2))
        return
    print(f"one noisy draw per image, {len(labels)} images of {args.data}, Lite0 at its 224 px view")
    print(f"{'sigma':>6} {'front':>8} {'top-1':>14} {'PSNR dB':>8} {'ms/img':>7}")
    for row in found:
        half = 1.96 * math.sqrt(row["top1"] * (1 - row["top1"]) / row["images"])
        print(f"{row['sigma']:>6g} {row['front']:>8} {100 * row['top1']:>7.1f}% ±{100 * half:4.1f} "
              f"{row['psnr']:>8.2f} {row['ms_per_image']:>7.1f}")


if __name__ == "__main__":
    main()
