"""The ``ciid`` command-line tool."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from ..attacks import ATTACKS, format_eps, parse_eps
from ..defences.registry import DEFENCES, is_plugin
from ..errors import ConfigError, ImageError
from .options import common_options, defence_options, split_names
from .session import CommandFailed, open_classifier, progress, report_errors, say, warn

if TYPE_CHECKING:
    import torch

    from ..defences.registry import Defence
    from ..models.base import Classifier
    from ..smoothing import SmoothedClassifier

# OpenMP threads that spin-wait while another process holds a core made commands many times slower on shared
# CPUs; passive waiting costs nothing measurable when the machine is idle. Set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BUDGETED_ATTACKS = tuple(name for name, spec in ATTACKS.items() if spec.bounded)
"""Attacks `classify --attack` and `explain --attack` take: those with a budget (minimum-norm attacks have none to
give)."""


def attack_options(what: str):
    """``--attack`` (its help: ``what``) and ``--eps``, the gray-box attack of ``classify`` and ``explain``."""
    def decorate(command):
        command = click.option("--eps", "eps_text", default="4/255", show_default=True,
                               help="With --attack: its budget on images in [0, 1] (L-inf; L2 for the -l2 "
                                    "attacks).")(command)
        return click.option("--attack", type=click.Choice(BUDGETED_ATTACKS), default=None, help=what)(command)
    return decorate


def _attack_budget(attack: str | None, eps_text: str) -> float | None:
    """``--eps`` read for ``--attack`` (None without one): at most 1 for L-inf attacks."""
    if attack is None:
        return None
    return parse_eps(eps_text, upper=float("inf") if ATTACKS[attack].norm == "2" else 1.0)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ciidefence")
def main() -> None:
    """CIIDefence: purify images against adversarial examples, and measure it.

    Images may be given as files or folders (every image file in the folder).
    """


SMOOTHED = "smoothed"
"""``classify --defence smoothed``: the smoothed classifier, which answers a class with a certified radius, or
abstains."""


def _parse_defences(text: str) -> list[str]:
    names = list(split_names(text))
    unknown = [name for name in names if name not in DEFENCES and name != SMOOTHED and not is_plugin(name)]
    if unknown or not names:
        raise CommandFailed(
            f"unknown defence {', '.join(unknown) or repr(text)}; choose from: {', '.join(DEFENCES)}, {SMOOTHED}, "
            f"or a plug-in's import path package.module:factory", exit_code=2,
        )
    return names


def _read_labels(path: str | None) -> dict[str, int]:
    """``file,class_index`` rows (as in the bundled labels.csv), keyed by file name; ImageNet's 1,000 classes."""
    from ..evaluation.data import read_labels_csv

    if path is None:
        return {}
    try:
        return {Path(name).name: label for name, label in read_labels_csv(path).items()}
    except ConfigError as error:
        raise CommandFailed(str(error), exit_code=2) from None


def _top(classifier: Classifier, logits: torch.Tensor, count: int) -> list[dict]:
    probabilities = logits.softmax(dim=0)
    values, indices = probabilities.topk(min(count, probabilities.numel()))
    return [
        {"class": int(i), "name": classifier.class_name(int(i)), "probability": round(float(p), 6)}
        for p, i in zip(values, indices, strict=True)
    ]


def _classify_one(
    classifier: Classifier, image: torch.Tensor, defences: dict[str, Defence], top: int, seed: int, name: str,
    smoothed: SmoothedClassifier | None = None,
) -> dict[str, list[dict]]:
    import torch

    from ..randomness import seeded_generator

    batch = image[None].to(classifier.device)
    predictions = {}
    with torch.no_grad():
        for label, defence in defences.items():
            purified = defence(batch, generator=seeded_generator(seed, name, defence.digest))
            logits = classifier(purified)[0]
            predictions[label] = _top(classifier, logits, top)
    if smoothed is not None:
        certificate = smoothed(batch, generator=seeded_generator(seed, name, SMOOTHED)).certificates[0]
        predictions[SMOOTHED] = [{
            "class": certificate.prediction,
            "name": "abstain" if certificate.abstained else classifier.class_name(certificate.prediction),
            "probability": round(certificate.count / smoothed.n, 6), "radius": round(certificate.radius, 6),
            "p_lower": round(certificate.p_lower, 6),
        }]
    return predictions


def _attacked(classifier: Classifier, view: torch.Tensor, label: int | None, attack: str, eps: float, seed: int,
              name: str) -> torch.Tensor:
    """``view`` (at the classifier's view) under a gray-box ``attack`` made on the bare classifier: away from
    ``label``, or from the classifier's own answer where the label is unknown; seeded by the image's name."""
    import torch

    from ..attacks import attack_params
    from ..attacks.estimators import art_estimator
    from ..attacks.generate import generate
    from ..randomness import stable_seed

    batch = view[None]
    if label is None:
        with torch.no_grad():
            label = int(classifier(batch).argmax(1)[0])
    adversarial = generate(art_estimator(classifier), attack, batch, torch.tensor([label]), eps,
                           attack_params(attack), 1, stable_seed(seed, name, attack, eps))
    return adversarial[0]


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--defence", "defence_text", default="ciid", show_default=True,
              help=f"Comma-separated, to compare: {', '.join(DEFENCES)}, or your own as package.module:factory "
                   f"(docs/PLUGINS.md).")
@click.option("--top", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Predictions shown per image.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="CSV with columns file,class_index (as samples/labels.csv): shows each image's true class and "
                   "prints top-1 accuracy.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@attack_options("Also attack each image, gray-box (made on the bare classifier, without knowing the defence), and "
                "classify it through each defence: both clean and attacked accuracy are printed. Images are then "
                "classified at the classifier's view, where the attack is made, as in `ciid evaluate`.")
@click.option("--resolution", type=click.Choice(("view", "full")), default="view", show_default=True,
              help="view: the defences get the classifier's view of each image (resized and centre-cropped first), "
                   "where they keep the most against a gray-box attacker, even one who attacks the full image "
                   "(docs/RESULTS.md); full: each image at its own resolution (on 500 images, CIIDefence keeps "
                   "19% mean robust there against 45% at the view).")
@click.option("--smoothing-sigma", type=click.FloatRange(0, 1, min_open=True), default=0.25, show_default=True,
              help="With --defence smoothed: the noise level (pixels in [0, 1] at the classifier's view).")
@click.option("--smoothing-front", default="learned", show_default=True,
              help="With --defence smoothed: what is smoothed in front of the classifier: none, wavelet, learned "
                   "(the shipped Gaussian denoiser) or a defence name.")
@click.option("--smoothing-n0", type=click.IntRange(1), default=100, show_default=True,
              help="With --defence smoothed: noisy copies that select the class.")
@click.option("--smoothing-n", type=click.IntRange(1), default=1000, show_default=True,
              help="With --defence smoothed: noisy copies that bound its probability (the cost: N0 + N classifier "
                   "passes per image).")
@click.option("--smoothing-alpha", type=click.FloatRange(0, 0.5, min_open=True, max_open=True), default=0.001,
              show_default=True, help="With --defence smoothed: the certificate is wrong with at most this chance.")
@defence_options
@common_options
@report_errors
def classify(images, defence_text, top, labels, as_json, attack, eps_text, resolution, smoothing_sigma, smoothing_front,
             smoothing_n0, smoothing_n, smoothing_alpha, config, model, checkpoint, random_weights, device, threads,
             seed, max_pixels) -> None:
    """Classify IMAGES, with or without a defence in front of the classifier.

    --defence smoothed answers with the smoothed classifier (Cohen et al.
    2019): a class and the L2 radius within which no perturbation can change
    it, or "abstain" where the noisy copies do not agree enough to certify
    any class. --attack adds a gray-box attack on each image and prints what
    each defence keeps of it.
    """
    from ..defences.registry import build_defence
    from ..images import find_images, load_image

    eps = _attack_budget(attack, eps_text)
    names = _parse_defences(defence_text)
    truth = _read_labels(labels)
    classifier = open_classifier(model, checkpoint, random_weights, device, seed, threads)
    defences = {name: build_defence(name, classifier, config) for name in names if name != SMOOTHED}
    smoothed = None
    if SMOOTHED in names:
        from ..evaluation.certification import FRONTS, build_front
        from ..smoothing import SmoothedClassifier

        if smoothing_front not in FRONTS and smoothing_front not in DEFENCES:
            raise CommandFailed(f"--smoothing-front {smoothing_front!r}: choose from {', '.join(FRONTS)} or a "
                                f"defence name", exit_code=2)
        front = build_front(smoothing_front, classifier, smoothing_sigma, config, None)
        smoothed = SmoothedClassifier(classifier, smoothing_sigma, front.module, smoothing_n0, smoothing_n,
                                      smoothing_alpha)
    results, failures = [], 0
    for path in progress(find_images(images), "classify"):
        try:
            image = load_image(path, max_pixels, classifier.view_side)
            clean = None
            if attack is not None or resolution == "view":
                image = classifier.prepare(image[None].to(classifier.device))[0]
            if attack is not None:
                clean = _classify_one(classifier, image, defences, top, seed, path.name, smoothed)
                image = _attacked(classifier, image, truth.get(path.name), attack, cast(float, eps), seed, path.name)
            predictions = _classify_one(classifier, image, defences, top, seed, path.name, smoothed)
            predictions = {name: predictions[name] for name in names}  # in the order asked for
        except ImageError as error:
            warn(f"error: {error}")
            failures += 1
            continue
        label = truth.get(path.name)
        results.append({"file": str(path), "label": label,
                        "label_name": classifier.class_name(label) if label is not None else None,
                        "predictions": predictions})
        if clean is not None:
            results[-1]["clean_predictions"] = {name: clean[name] for name in names}
        if not as_json:
            say(_prediction_text(results[-1]))
    accuracy = _accuracy(results, names)
    clean_accuracy = _accuracy(results, names, "clean_predictions") if attack else None
    if as_json:
        document = {
            "model": classifier.name,
            "attack": {"name": attack, "eps": eps, "threat": "graybox"} if attack else None,
            "clean_accuracy": clean_accuracy,
            "defence_config": config.to_dict() if any(name in DEFENCES and DEFENCES[name].is_ciid
                                                      for name in names) else None,
            "results": results,
            "accuracy": accuracy,
            "failed": failures,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        for name, counts in accuracy.items():
            if clean_accuracy:
                before = clean_accuracy[name]
                click.echo(f"top-1 accuracy, defence {name}: clean {before['correct']}/{before['images']} = "
                           f"{100 * before['top1']:.1f}%; under {ATTACKS[attack].title} {format_eps(eps)} "
                           f"(gray-box) {counts['correct']}/{counts['images']} = {100 * counts['top1']:.1f}%")
            else:
                click.echo(f"top-1 accuracy, defence {name}: {counts['correct']}/{counts['images']} = "
                           f"{100 * counts['top1']:.1f}%")
        if truth and accuracy and len(results) > next(iter(accuracy.values()))["images"]:
            unlabelled = len(results) - next(iter(accuracy.values()))["images"]
            click.echo(f"({unlabelled} of {len(results)} images have no label in {labels}: left out of the "
                       f"accuracy)")
    if failures:
        raise CommandFailed(f"{failures} of {failures + len(results)} images failed")


def _prediction_text(result: dict) -> str:
    columns = [result["file"]]
    for name, predictions in result["predictions"].items():
        shown = ", ".join(f"{p['name']} (certified radius {p['radius']:.3f})" if "radius" in p and p["class"] >= 0
                          else p["name"] if "radius" in p else f"{p['name']} ({p['probability']:.3f})"
                          for p in predictions)
        columns.append(f"{name}: {shown}")
    if result["label"] is not None:
        columns.append(f"label: {result['label_name']} ({result['label']})")
    return "\t".join(columns)


def _accuracy(results: list[dict], defences: list[str], key: str = "predictions") -> dict[str, dict]:
    """Per defence: ``correct``, ``images`` (those with a label) and ``top1`` (their ratio), of the
    predictions under ``key``."""
    labelled = [r for r in results if r["label"] is not None]
    if not labelled:
        return {}
    found = {}
    for name in defences:
        correct = sum(r[key][name][0]["class"] == r["label"] for r in labelled)
        found[name] = {"correct": correct, "images": len(labelled), "top1": correct / len(labelled)}
    return found


def _check_output_folder(out: Path, paths: list[Path], overwrite: bool) -> None:
    """Refuse an --out that is, or lies inside, a folder of the inputs (their originals could be replaced)."""
    resolved = out.resolve()
    for folder in {path.resolve().parent for path in paths}:
        if (resolved == folder or folder in resolved.parents) and not overwrite:
            raise CommandFailed(f"--out {out} is or lies inside {folder}, which holds input images; choose "
                                f"another folder, or pass --overwrite", exit_code=2)


def _write_png(image: torch.Tensor, target: Path) -> None:
    """Write a PNG whole or not at all (a fresh temporary file in its folder, renamed onto ``target``)."""
    from ..files import write_atomically
    from ..images import save_image

    write_atomically(target, lambda handle: save_image(image, handle, format="PNG"))


@main.command("purify")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the purified PNGs (created if missing).")
@click.option("--defence", "defence_name", type=click.Choice([name for name in DEFENCES if name != "none"]),
              default="ciid", show_default=True)
@click.option("--overwrite", is_flag=True,
              help="Replace files already in --out, and allow --out inside a folder of the inputs.")
@click.option("--skip-existing", is_flag=True,
              help="Leave images whose PNG is already in --out (to finish a killed run).")
@defence_options
@common_options
@report_errors
def purify_command(images, out_dir, defence_name, overwrite, skip_existing, config, model, checkpoint,
                   random_weights, device, threads, seed, max_pixels) -> None:
    """Write a purified PNG of each of IMAGES, at its own size, into --out.

    Each PNG is written to a temporary file in --out and renamed when
    complete, so a killed run keeps every finished image and no partial one;
    --skip-existing then finishes it.
    """
    if overwrite and skip_existing:
        raise CommandFailed("--overwrite and --skip-existing contradict each other: give one", exit_code=2)
    from ..defences.registry import build_defence
    from ..images import find_images, load_image
    from ..randomness import seeded_generator

    paths = find_images(images)
    out = Path(out_dir)
    _check_output_folder(out, paths, overwrite)
    classifier = open_classifier(model, checkpoint, random_weights, device, seed, threads)
    defence = build_defence(defence_name, classifier, config)
    out.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    failures = skipped = 0
    for path in progress(paths, "purify"):
        target = out / f"{path.stem}.png"
        problem = None
        if target.name in written:
            problem = f"{path}: another input already wrote {target}"
        elif target.is_symlink() or (target.exists() and not target.is_file()):
            problem = f"{target} is a link or not a regular file; refusing to write through it"
        elif target.exists() and skip_existing:
            skipped += 1
            continue
        elif target.exists() and not overwrite:
            problem = f"{target} already exists; pass --overwrite to replace it, or --skip-existing to keep it"
        elif target.resolve().parent != out.resolve():
            problem = f"{target} resolves outside --out {out}"
        if problem:
            warn(f"error: {problem}")
            failures += 1
            continue
        try:
            image = load_image(path, max_pixels, classifier.view_side)[None].to(classifier.device)
            purified = defence(image, generator=seeded_generator(seed, path.name, defence.digest))[0]
        except ImageError as error:
            warn(f"error: {error}")
            failures += 1
            continue
        _write_png(purified, target)
        written.add(target.name)
    warn(f"wrote {len(written)} purified images to {out}" + (f"; kept {skipped} already there" if skipped else ""))
    if failures:
        raise CommandFailed(f"{failures} of {len(paths)} images failed")


FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


@main.command()
@click.argument("image", type=click.Path())
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Figure file (.png, .pdf or .svg).")
@attack_options("Draw the figure for IMAGE under this gray-box attack (made on the bare classifier, at its view, "
                "away from --label or else from the classifier's own answer): what CIIDefence sees and does when "
                "attacked.")
@click.option("--label", type=click.IntRange(0, 999), default=None,
              help="With --attack: IMAGE's true class index, which the attack moves away from.")
@defence_options
@common_options
@report_errors
def explain(image, out_path, attack, eps_text, label, config, model, checkpoint, random_weights, device, threads,
            seed, max_pixels) -> None:
    """Draw every step of CIIDefence on IMAGE into one figure."""
    import torch

    from ..defences.ciid import purify
    from ..images import load_image
    from .explain import explain_figure

    eps = _attack_budget(attack, eps_text)
    if label is not None and attack is None:
        raise CommandFailed("--label is the class --attack moves away from: give --attack too", exit_code=2)

    if config.regions != "cam":
        raise CommandFailed("explain draws the CAM-selected regions; use --regions cam", exit_code=2)
    if Path(out_path).suffix.lower() not in FIGURE_SUFFIXES:
        raise CommandFailed(f"--out {out_path}: a figure file ends in {', '.join(FIGURE_SUFFIXES)}", exit_code=2)
    from ..files import check_writable_folder

    check_writable_folder(Path(out_path).parent, "--out")
    classifier = open_classifier(model, checkpoint, random_weights, device, seed, threads)
    config.check_coverage(classifier.input_size)
    batch = load_image(image, max_pixels, classifier.view_side)[None].to(classifier.device)
    title = Path(image).name
    if attack is not None:
        batch = _attacked(classifier, classifier.prepare(batch)[0], label, attack, cast(float, eps), seed,
                          Path(image).name)[None]
        title += f" under {ATTACKS[attack].title} {format_eps(eps)} (gray-box, at the classifier's view)"
    purification = purify(batch, classifier, config)
    with torch.no_grad():
        undefended_logits, defended_logits = classifier(batch)[0], classifier(purification.output)[0]
    figure = explain_figure(classifier, batch[0], purification, defended_logits, config, title=title)
    figure.savefig(out_path, dpi=150, bbox_inches="tight")
    before, after = (classifier.class_name(int(logits.argmax())) for logits in (undefended_logits, defended_logits))
    warn(f"wrote {out_path}: {title}; undefended: {before}, CIIDefence: {after}")


from .certify import certify  # noqa: E402
from .evaluate import evaluate, report  # noqa: E402  (they use main's helpers)
from .sweep import sweep  # noqa: E402
from .train import export_inpainter, train_denoiser, train_inpainter  # noqa: E402

main.add_command(train_inpainter)
main.add_command(export_inpainter)
main.add_command(train_denoiser)
main.add_command(evaluate)
main.add_command(report)
main.add_command(sweep)
main.add_command(certify)

if __name__ == "__main__":
    main()
