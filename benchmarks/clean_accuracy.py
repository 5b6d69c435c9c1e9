"""Clean top-1 of the embedded classifier, undefended and behind CIIDefence (defaults).

By default each image is purified at its own resolution, as `ciid classify`
does; --view purifies the classifier's 224 px view instead.

    python benchmarks/clean_accuracy.py [--limit 500] [--view] [--model efficientnet_lite1] [--bare]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from tqdm import tqdm

from ciidefence import CIIDefenceConfig, load_classifier, load_image, purify
from common import add_data_option, sample_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--view", action="store_true", help="purify the classifier's view, not the full image")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--bare", action="store_true", help="only the undefended classifier (fast)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    classifier = load_classifier(args.model)
    config = CIIDefenceConfig()
    paths, labels = sample_images(args.limit, args.data)
    bare = defended = 0
    started = time.perf_counter()
    with torch.no_grad():
        for path, label in zip(tqdm(paths, file=sys.stderr), labels.tolist(), strict=True):
            image = load_image(path)[None]
            if args.view:
                image = classifier.prepare(image)
            if args.bare:
                bare += int(classifier(image).argmax(1) == label)
                continue
            result = purify(image, classifier, config)
            bare += int(result.evidence.logits.argmax(1) == label)
            defended += int(classifier(result.output).argmax(1) == label)
    n = len(paths)
    print(f"{n} images, {args.model}, " + ("undefended only" if args.bare else
          f"purified at {'the view' if args.view else 'full resolution'}") + f", {time.perf_counter() - started:.0f} s")
    if args.bare:
        print(f"undefended top-1 {bare}/{n} = {100 * bare / n:.1f}%")
        return
    print(f"config {config}")
    print(f"undefended top-1 {bare}/{n} = {100 * bare / n:.1f}%")
    print(f"CIIDefence top-1 {defended}/{n} = {100 * defended / n:.1f}%  ({100 * (defended - bare) / n:+.1f} points)")


if __name__ == "__main__":
    main()
