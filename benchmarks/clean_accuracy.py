"""Clean top-1 of the embedded classifier, undefended and behind CIIDefence (defaults).

By default each image is purified at its own resolution, as `ciid classify`
does; --view purifies the classifier's 224 px view instead.

    python benchmarks/clean_accuracy.py [--limit 500] [--view]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from tqdm import tqdm

from ciidefence import CIIDefenceConfig, load_classifier, load_image, purify
from common import sample_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--view", action="store_true", help="purify the 224 px view, not the full image")
    args = parser.parse_args()
    classifier = load_classifier()
    config = CIIDefenceConfig()
    paths, labels = sample_images(args.limit)
    bare = defended = 0
    started = time.perf_counter()
    with torch.no_grad():
        for path, label in zip(tqdm(paths, file=sys.stderr), labels.tolist(), strict=True):
            image = load_image(path)[None]
            if args.view:
                image = classifier.prepare(image)
            result = purify(image, classifier, config)
            bare += int(result.evidence.logits.argmax(1) == label)
            defended += int(classifier(result.output).argmax(1) == label)
    n = len(paths)
    print(f"{n} images, purified at {'the 224 px view' if args.view else 'full resolution'}, "
          f"{time.perf_counter() - started:.0f} s")
    print(f"config {config}")
    print(f"undefended top-1 {bare}/{n} = {100 * bare / n:.1f}%")
    print(f"CIIDefence top-1 {defended}/{n} = {100 * defended / n:.1f}%  ({100 * (defended - bare) / n:+.1f} points)")


if __name__ == "__main__":
    main()
