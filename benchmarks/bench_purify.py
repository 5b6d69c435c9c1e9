"""Images per second for bare and CIIDefence-defended classification, with stage times.

Inputs are shared sample images at the classifier's 224 px view. For each
batch size, bare classification is one forward pass; defended classification
is purification (whose stages are timed separately) plus the decision's
forward pass. Prints milliseconds per image and images per second, and the
ratio defended / bare (issue target: at most 2.5 at batch 32; floor 2.0).

    python benchmarks/bench_purify.py [--batch-sizes 1,32] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from common import classifier_views, sample_images

from ciidefence import CIIDefenceConfig, load_classifier, purify


def timed(function, repeats: int) -> float:
    """Best wall time of ``repeats`` calls, after one warm-up call."""
    function()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    classifier = load_classifier().to(device)
    config = CIIDefenceConfig()
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    paths, _ = sample_images(max(sizes))
    views = classifier_views(classifier, paths).to(device)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {device}, torch {torch.__version__}")
    print(f"config: {config}")
    for size in sizes:
        batch = views[:size]
        with torch.no_grad():
            bare = timed(lambda: classifier(batch), args.repeats)
            stage_totals: dict[str, float] = {}

            def defended() -> None:
                timings: dict[str, float] = {}
                output = purify(batch, classifier, config, timings=timings).output
                started = time.perf_counter()
                classifier(output)
                timings["decision"] = time.perf_counter() - started
                stage_totals.clear()
                stage_totals.update(timings)

            total = timed(defended, args.repeats)
        print(f"\nbatch {size}:")
        print(f"  bare      {1000 * bare / size:8.2f} ms/img  {size / bare:8.1f} img/s")
        print(f"  defended  {1000 * total / size:8.2f} ms/img  {size / total:8.1f} img/s   "
              f"ratio {total / bare:.2f}x bare")
        for stage, seconds in stage_totals.items():
            print(f"    {stage:9s} {1000 * seconds / size:8.2f} ms/img")


if __name__ == "__main__":
    main()
