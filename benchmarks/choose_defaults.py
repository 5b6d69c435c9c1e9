"""Choose CIIDefence's defaults by measurement: clean and gray-box PGD accuracy.

For each candidate configuration, on the first N shared sample images, either
at the classifier's 224 px view (default) or, with --native, at each image's
own resolution (the defence purifies the full image; the classifier resizes
and centre-crops): top-1 of the defended classifier on clean images and
on PGD-10 (L-inf, eps 2/255, step eps/4, no random start) adversarial images
made against the bare classifier with ART (gray-box: the attacker does not
know the defence). Prints one line per configuration.

    python benchmarks/choose_defaults.py --limit 100 [--native]
"""

from __future__ import annotations

import argparse
import time

import torch

from ciidefence import CIIDefenceConfig, load_classifier, load_image, purify
from ciidefence.defences import defence_digest
from common import add_data_option, classifier_views, sample_images

CANDIDATES = {
    "prototype k5 p2 w12": CIIDefenceConfig(top_k=5, peaks=2, half_width=12, sigma=0.04),
    "k3 p2 w8": CIIDefenceConfig(top_k=3, peaks=2, half_width=8, sigma=0.04),
    "k3 p1 w8": CIIDefenceConfig(top_k=3, peaks=1, half_width=8, sigma=0.04),
    "k5 p1 w6": CIIDefenceConfig(top_k=5, peaks=1, half_width=6, sigma=0.04),
    "k3 p2 w6 s.03": CIIDefenceConfig(top_k=3, peaks=2, half_width=6, sigma=0.03),
    "k3 p2 w8 s.05": CIIDefenceConfig(top_k=3, peaks=2, half_width=8, sigma=0.05),
    "k3 p2 w8 ns": CIIDefenceConfig(top_k=3, peaks=2, half_width=8, inpainter="navier-stokes"),
    "k3 p2 w8 after": CIIDefenceConfig(top_k=3, peaks=2, half_width=8, fusion="denoise-after"),
    "k3 p2 w8 db2": CIIDefenceConfig(top_k=3, peaks=2, half_width=8, wavelet="db2"),
    "k3 p2 w8 sym4": CIIDefenceConfig(top_k=3, peaks=2, half_width=8, wavelet="sym4"),
    "k3 p2 w8 db2 s.045": CIIDefenceConfig(top_k=3, peaks=2, half_width=8, wavelet="db2", sigma=0.045),
    "k3 p1 w8 db2 s.035": CIIDefenceConfig(top_k=3, peaks=1, half_width=8, wavelet="db2", sigma=0.035),
    "k5 p2 w12 db2": CIIDefenceConfig(top_k=5, peaks=2, half_width=12, wavelet="db2"),
    "k3 p2 w8 db4": CIIDefenceConfig(top_k=3, peaks=2, half_width=8, wavelet="db4"),
    "denoise + 1 px boxes s.04": CIIDefenceConfig(top_k=1, peaks=1, half_width=0, sigma=0.04),
}


def grid() -> dict[str, CIIDefenceConfig]:
    """A small grid around the candidates: sigma x wavelet levels x wavelet x box layout."""
    configs = {}
    for sigma in (0.03, 0.04, 0.05, 0.06):
        for levels in (None, 2):
            for wavelet in ("db1", "db2"):
                for k, p, w in ((3, 2, 8), (5, 2, 12)):
                    name = f"k{k} p{p} w{w} {wavelet} L{levels or 'auto'} s{sigma}"
                    configs[name] = CIIDefenceConfig(
                        top_k=k, peaks=p, half_width=w, wavelet=wavelet, wavelet_levels=levels, sigma=sigma
                    )
    return configs


def pgd(classifier, images, labels, eps):
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    art_model = PyTorchClassifier(
        classifier, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]),
        nb_classes=1000, clip_values=(0.0, 1.0), device_type="cpu",
    )
    attack = ProjectedGradientDescent(
        art_model, norm="inf", eps=eps, eps_step=eps / 4, max_iter=10, num_random_init=0,
        batch_size=25, verbose=False,
    )
    return torch.from_numpy(attack.generate(images.numpy(), y=labels.numpy()))


def top1(classifier, images, labels, config=None, batch=25):
    """Top-1 of (defended) ``classifier``; ``images`` a tensor, or a list of tensors of any size."""
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunks = images[start : start + batch]
            chunks = [chunks] if isinstance(chunks, torch.Tensor) else [c[None] for c in chunks]
            for offset, chunk in enumerate(chunks):
                if config is not None:
                    chunk = purify(chunk, classifier, config).output
                truth = labels[start + offset : start + offset + len(chunk)]
                correct += int((classifier(chunk).argmax(1) == truth).sum())
    return correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--eps", type=float, default=2 / 255)
    parser.add_argument("--only", default=None, help="semicolon-separated candidate names")
    parser.add_argument("--native", action="store_true", help="purify at each image's own size")
    parser.add_argument("--grid", action="store_true", help="score the grid instead of the candidates")
    args = parser.parse_args()
    torch.manual_seed(0)
    classifier = load_classifier()
    paths, labels = sample_images(args.limit, args.data)
    started = time.perf_counter()
    if args.native:
        images = [load_image(path) for path in paths]
        adversarial = [pgd(classifier, x[None], y[None], args.eps)[0] for x, y in zip(images, labels, strict=True)]
    else:
        images = classifier_views(classifier, paths)
        adversarial = pgd(classifier, images, labels, args.eps)
    print(f"{len(images)} images, PGD-10 eps={args.eps * 255:.1f}/255 in {time.perf_counter() - started:.0f} s")
    print(f"{'undefended':24s} clean {top1(classifier, images, labels):6.1%}  "
          f"pgd {top1(classifier, adversarial, labels):6.1%}")
    candidates = grid() if args.grid else CANDIDATES
    names = args.only.split(";") if args.only else candidates
    for name in names:
        config = candidates[name]
        started = time.perf_counter()
        clean = top1(classifier, images, labels, config)
        robust = top1(classifier, adversarial, labels, config)
        print(f"{name:24s} clean {clean:6.1%}  pgd {robust:6.1%}  "
              f"({time.perf_counter() - started:.0f} s)  {defence_digest('ciid', config.to_dict())}", flush=True)


if __name__ == "__main__":
    main()
