"""Harness overhead: gray-box PGD-10 through the evaluation harness against a bare torch loop.

Both attack the same images with the same model: L-inf PGD, eps 2/255, 10
steps of eps/4, no random start (the harness's default PGD), batches of 8.
The minimal loop is plain torch autograd; the harness is
:class:`ciidefence.evaluation.Evaluation` with ART's PGD, writing every
image's outcome to SQLite, exactly as ``ciid evaluate --defences none
--attacks pgd --eps 2/255 --no-sanity`` runs it. Prints seconds per image for
both, their ratio (issue target: at most 1.3), and both accuracies, which
should agree.

    python benchmarks/bench_harness.py [--limit 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from ciidefence import load_classifier
from ciidefence.evaluation import Evaluation, RunConfig, open_run
from common import SAMPLE_DIR, classifier_views, sample_images

EPS, STEPS, BATCH = 2 / 255, 10, 8


def pgd(classifier, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    adversarial = images.clone()
    for _ in range(STEPS):
        adversarial.requires_grad_(True)
        loss = F.cross_entropy(classifier(adversarial), labels)
        (gradient,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            adversarial = adversarial + EPS / 4 * gradient.sign()
            adversarial = (images + (adversarial - images).clamp(-EPS, EPS)).clamp(0, 1)
    return adversarial.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    classifier = load_classifier().to(device)
    paths, labels = sample_images(args.limit)
    views = classifier_views(classifier, paths).to(device)
    labels = labels.to(device)

    pgd(classifier, views[:BATCH], labels[:BATCH])  # warm-up
    started = time.perf_counter()
    correct = 0
    for start in range(0, args.limit, BATCH):
        batch, truth = views[start:start + BATCH], labels[start:start + BATCH]
        adversarial = pgd(classifier, batch, truth)
        with torch.no_grad():
            correct += int((classifier(adversarial).argmax(1) == truth).sum())
    bare = (time.perf_counter() - started) / args.limit
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {args.limit} images")
    print(f"minimal torch PGD-10 loop:  {bare:.3f} s/img   accuracy under attack {correct / args.limit:.1%}")

    config = RunConfig(data=str(SAMPLE_DIR), labels=None, model="efficientnet_lite0", checkpoint=None,
                       random_weights=False, defences=("none",), ciid={}, attacks=("pgd",), eps=(EPS,),
                       limit=args.limit, batch_size=BATCH, sanity=False)
    evaluation = Evaluation(config, device)
    for item in evaluation.images:
        evaluation.view(item)  # load the images first, as the minimal loop had them
    with tempfile.TemporaryDirectory() as folder, open_run(folder, config, resume=False) as store:
        started = time.perf_counter()
        evaluation.run(store)
        harness = (time.perf_counter() - started) / args.limit
        rows = [r for r in store.rows() if r["attack"] == "pgd"]
    accuracy = sum(r["pred_adv"] == r["label"] for r in rows) / len(rows)
    print(f"harness (clean + PGD-10):   {harness:.3f} s/img   accuracy under attack {accuracy:.1%}")
    print(f"ratio harness / minimal: {harness / bare:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
