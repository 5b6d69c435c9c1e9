"""Milliseconds per image of every defence of the registry, and of the bare classifier, at the classifier's view.

One figure per defence, measured the same way, for the tables that quote a
defence's cost: the best of ``--repeats`` calls on a batch of shared images
(after one warm-up call), divided by the batch. The defence alone; the
classifier's prediction is timed once, beside it.

    python benchmarks/bench_defences.py [--batch-size 32] [--threads 2] [--defences none,ciid,...] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ciidefence import load_classifier
from ciidefence.defences.registry import DEFENCES, build_defence
from common import add_data_option, classifier_views, sample_images


def best_seconds(function, repeats: int) -> float:
    function()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--defences", default=",".join(name for name in DEFENCES if name != "gaussian-denoiser"))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    classifier = load_classifier()
    paths, _ = sample_images(args.batch_size, args.data)
    views = classifier_views(classifier, paths)
    generators = [torch.Generator().manual_seed(index) for index in range(len(views))]
    figures = {}
    with torch.no_grad():
        figures["classifier"] = 1000 * best_seconds(lambda: classifier(views), args.repeats) / len(views)
        for name in args.defences.split(","):
            defence = build_defence(name, classifier)
            figures[name] = 1000 * best_seconds(lambda d=defence: d(views, generator=generators),
                                                args.repeats) / len(views)
    if args.json:
        print(json.dumps({"batch_size": len(views), "threads": torch.get_num_threads(), "ms_per_image": figures}))
        return
    print(f"batch {len(views)}, {torch.get_num_threads()} threads, best of {args.repeats}; ms per image:")
    for name, ms in figures.items():
        print(f"  {name:22s} {ms:9.1f}")


if __name__ == "__main__":
    main()
