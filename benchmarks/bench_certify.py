"""What a certificate costs: the learned denoiser's certification time over the bare classifier's, and the dry run.

1. Cost ratio: for each of ``--images`` images, the N0 + N noisy copies of
   CERTIFY through the learned denoiser and the classifier, against the same
   copies through the bare classifier, in one process, alternately; prints
   the ratio of the best times (floor 1x).
2. ``--dry-run`` against the run: ``ciid certify --dry-run`` then the real
   run on the same images, printing the estimate, the measured time and
   their ratio::

    python benchmarks/bench_certify.py --images 2 --n 1000 [--denoiser-model W.safetensors]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ciidefence import load_classifier
from ciidefence.defences.config import CIIDefenceConfig
from ciidefence.evaluation.certification import build_front
from ciidefence.randomness import seeded_generator
from ciidefence.smoothing.certify import class_counts
from common import add_data_option, checked_data, classifier_views, sample_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--denoiser-model", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    classifier = load_classifier()
    paths, _ = sample_images(args.images, args.data)
    views = classifier_views(classifier, paths)
    fronts = {name: build_front(name, classifier, args.sigma, CIIDefenceConfig(), args.denoiser_model)
              for name in ("none", "learned")}
    best = {name: float("inf") for name in fronts}
    for _ in range(args.repeats):
        for name, front in fronts.items():
            started = time.perf_counter()
            for view, path in zip(views, paths, strict=True):
                generator = seeded_generator(0, classifier.name, args.sigma, path.name)
                class_counts(lambda x, f=front: classifier(f(x)), view, args.sigma, args.n0 + args.n,
                             args.batch_size, generator)
            best[name] = min(best[name], time.perf_counter() - started)
    per_image = {name: seconds / len(views) for name, seconds in best.items()}
    print(f"N0 + N = {args.n0 + args.n} copies, {len(views)} images, {args.threads} threads: bare "
          f"{per_image['none']:.1f} s per image, learned denoiser + classifier {per_image['learned']:.1f} s; "
          f"ratio {per_image['learned'] / per_image['none']:.2f}x (target at most 1.5x)")

    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "ciidefence.cli.main", "certify", "--data", str(checked_data(args.data)),
                   "--limit", str(args.images), "--sigma", str(args.sigma), "--denoiser", "learned", "--n0",
                   str(args.n0), "--n", str(args.n), "--batch-size", str(args.batch_size), "--threads",
                   str(args.threads), "--out", str(Path(scratch) / "run")]
        if args.denoiser_model:
            command += ["--denoiser-model", args.denoiser_model]
        plan = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, check=True).stdout
        estimate = _estimate_seconds(plan)
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, text=True, check=True)
        measured = time.perf_counter() - started
    print(f"ciid certify --dry-run estimated {estimate:.0f} s for {args.images} images; the run took {measured:.0f} s "
          f"(ratio {measured / estimate:.2f}; target within 1.5x)")


def _estimate_seconds(plan: str) -> float:
    """The dry run's total, in seconds."""
    text = plan.strip().splitlines()[-1].split(": ")[-1]
    value, unit = text.split()
    return float(value) * {"s": 1, "min": 60, "h": 3600}[unit]


if __name__ == "__main__":
    main()
