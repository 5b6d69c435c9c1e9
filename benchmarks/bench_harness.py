"""Harness overhead: gray-box PGD-10 through the evaluation harness against a bare torch loop.

Both attack the same images with the same model: L-inf PGD, eps 2/255, 10
steps of eps/4, no random start (``pgd.restarts=0``), batches of 8.
The minimal loop is plain torch autograd; the harness is
:class:`ciidefence.evaluation.Evaluation` with ART's PGD, writing every
image's outcome to SQLite, exactly as ``ciid evaluate --defences none
--attacks pgd --attack-param pgd.restarts=0 --eps 2/255 --no-sanity`` runs it. Prints seconds per image for
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
from common import add_data_option, classifier_views, sample_images

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


def bare_run(classifier, views: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Seconds per image and accuracy under attack of the minimal loop."""
    started = time.perf_counter()
    correct = 0
    for start in range(0, len(views), BATCH):
        batch, truth = views[start:start + BATCH], labels[start:start + BATCH]
        adversarial = pgd(classifier, batch, truth)
        with torch.no_grad():
            correct += int((classifier(adversarial).argmax(1) == truth).sum())
    return (time.perf_counter() - started) / len(views), correct / len(views)


def harness_run(evaluation: Evaluation, config: RunConfig) -> tuple[float, float]:
    """Seconds per image and accuracy under attack of ``Evaluation`` with a fresh results database."""
    with tempfile.TemporaryDirectory() as folder, open_run(folder, config, resume=False) as store:
        started = time.perf_counter()
        evaluation.run(store)
        seconds = (time.perf_counter() - started) / len(evaluation.images)
        rows = [r for r in store.result_rows() if r.attack == "pgd"]
    return seconds, sum(r.pred_adv == r.label for r in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternate runs of each; the best of each is compared (a shared CPU adds noise)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    classifier = load_classifier().to(device)
    paths, labels = sample_images(args.limit, args.data)
    views = classifier_views(classifier, paths).to(device)
    labels = labels.to(device)
    config = RunConfig(data=str(args.data), labels=None, model="efficientnet_lite0", checkpoint=None,
                       random_weights=False, defences=("none",), ciid={}, attacks=("pgd",), eps=(EPS,),
                       attack_overrides={"pgd": {"restarts": "0"}},
                       limit=args.limit, batch_size=BATCH, sanity=False)
    evaluation = Evaluation(config, device)
    for item in evaluation.images:
        evaluation.inputs.get(item)  # load the images first, as the minimal loop had them
    pgd(classifier, views[:BATCH], labels[:BATCH])  # warm-up
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {args.limit} images")
    bare, harness = [], []
    for repeat in range(args.repeats):
        bare.append(bare_run(classifier, views, labels))
        harness.append(harness_run(evaluation, config))
        print(f"run {repeat + 1}: minimal loop {bare[-1][0]:.3f} s/img, harness {harness[-1][0]:.3f} s/img")
    (best_bare, bare_accuracy), (best_harness, harness_accuracy) = min(bare), min(harness)
    print(f"minimal torch PGD-10 loop:  {best_bare:.3f} s/img   accuracy under attack {bare_accuracy:.1%}")
    print(f"harness (clean + PGD-10):   {best_harness:.3f} s/img   accuracy under attack {harness_accuracy:.1%}")
    print(f"ratio harness / minimal (best of {args.repeats} each): {best_harness / best_bare:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
