"""Images per second for bare and CIIDefence-defended classification, with stage times and peak memory.

Inputs are shared sample images at the classifier's 224 px view. For each
batch size, bare classification is one forward pass; defended classification
is purification (whose stages are timed separately) plus the decision's
forward pass. Prints milliseconds per image and images per second, the ratio
defended / bare (issue targets: at most 2.2 on the CPU at batch 32, 2.5 on a
GPU at batch 128; the floor is about 2: one pass for the CAMs, one for the
decision), and peak memory.

    python benchmarks/bench_purify.py [--batch-sizes 1,32,128] [--device cpu|cuda] [--strength S] [--inpainter deepfill]
        [--half-width W] [--inpainter-precision bfloat16]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import resource
import time

import torch

from ciidefence import STRENGTHS, load_classifier, purify, strength_config
from ciidefence.inpainting import INPAINTER_PRECISIONS
from common import add_data_option, classifier_views, sample_images


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(function, repeats: int, device: torch.device) -> float:
    """Best wall time of ``repeats`` calls, after one warm-up call."""
    function()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        function()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def peak_memory(device: torch.device) -> str:
    resident = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = f"peak resident memory {resident:.0f} MiB"
    if device.type == "cuda":
        text += f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--batch-sizes", default="1,32,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strength", choices=STRENGTHS, default="balanced")
    parser.add_argument("--inpainter", default=None, help="instead of the strength's, e.g. harmonic or deepfill")
    parser.add_argument("--half-width", type=int, default=None, help="instead of the strength's")
    parser.add_argument("--inpainter-precision", choices=INPAINTER_PRECISIONS, default=None,
                        help="instead of the strength's (float32): bfloat16 runs the deepfill network under autocast")
    args = parser.parse_args()
    device = torch.device(args.device)
    classifier = load_classifier().to(device)
    overrides = {"inpainter": args.inpainter, "half_width": args.half_width,
                 "inpainter_precision": args.inpainter_precision}
    config = dataclasses.replace(strength_config(args.strength),
                                 **{name: value for name, value in overrides.items() if value is not None})
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    paths, _ = sample_images(max(sizes), args.data)
    views = classifier_views(classifier, paths).to(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"machine: {name}, {torch.get_num_threads()} torch threads, device {device}, torch {torch.__version__}")
    print(f"config: {config}")
    for size in sizes:
        batch = views[:size]
        with torch.no_grad():
            bare = timed(lambda batch=batch: classifier(batch), args.repeats, device)
            stage_totals: dict[str, float] = {}

            def defended(batch=batch, stage_totals=stage_totals) -> None:
                timings: dict[str, float] = {}
                output = purify(batch, classifier, config, timings=timings).output
                started = time.perf_counter()
                classifier(output)
                synchronize(device)
                timings["decision"] = time.perf_counter() - started
                stage_totals.clear()
                stage_totals.update(timings)

            total = timed(defended, args.repeats, device)
        print(f"\nbatch {size}:")
        print(f"  bare      {1000 * bare / size:8.2f} ms/img  {size / bare:8.1f} img/s")
        print(f"  defended  {1000 * total / size:8.2f} ms/img  {size / total:8.1f} img/s   "
              f"ratio {total / bare:.2f}x bare")
        for stage, seconds in stage_totals.items():
            print(f"    {stage:9s} {1000 * seconds / size:8.2f} ms/img")
    print(f"\n{peak_memory(device)}")


if __name__ == "__main__":
    main()
