"""The ``ciid`` command-line tool."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..defences.registry import DEFENCES
from ..errors import ImageError
from .options import common_options, defence_options, split_names
from .session import CommandFailed, open_classifier, progress, report_errors, say, warn

if TYPE_CHECKING:
    import torch

    from ..defences.registry import Defence
    from ..models.base import Classifier

# OpenMP threads that spin-wait while another process holds a core made commands many times slower on shared
# CPUs; passive waiting costs nothing measurable when the machine is idle. Set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ciidefence")
def main() -> None:
    """CIIDefence: purify images against adversarial examples, and measure it.

    Images may be given as files or folders (every image file in the folder).
    """


def _parse_defences(text: str) -> list[str]:
    names = list(split_names(text))
    unknown = [name for name in names if name not in DEFENCES]
    if unknown or not names:
        raise CommandFailed(
            f"unknown defence {', '.join(unknown) or repr(text)}; choose from: {', '.join(DEFENCES)}",
            exit_code=2,
        )
    return names


def _read_labels(path: str | None) -> dict[str, int]:
    """``file,class_index`` rows (as in the bundled labels.csv), keyed by file name."""
    if path is None:
        return {}
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        return {Path(row["file"]).name: int(row["class_index"]) for row in rows}
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise CommandFailed(
            f"{path}: not a labels CSV with columns file,class_index ({error})", exit_code=2
        ) from None


def _top(classifier: Classifier, logits: torch.Tensor, count: int) -> list[dict]:
    probabilities = logits.softmax(dim=0)
    values, indices = probabilities.topk(min(count, probabilities.numel()))
    return [
        {"class": int(i), "name": classifier.class_name(int(i)), "probability": round(float(p), 6)}
        for p, i in zip(values, indices, strict=True)
    ]


def _classify_one(
    classifier: Classifier, image: torch.Tensor, defences: dict[str, Defence], top: int, seed: int, name: str
) -> dict[str, list[dict]]:
    import torch

    from ..randomness import seeded_generator

    batch = image[None].to(next(classifier.parameters()).device)
    predictions = {}
    with torch.no_grad():
        for label, defence in defences.items():
            purified = defence(batch, generator=seeded_generator(seed, name, defence.digest))
            logits = classifier(purified)[0]
            predictions[label] = _top(classifier, logits, top)
    return predictions


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--defence", "defence_text", default="ciid", show_default=True,
              help=f"Comma-separated, to compare: {', '.join(DEFENCES)}.")
@click.option("--top", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Predictions shown per image.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="CSV with columns file,class_index (as samples/labels.csv): shows each image's true class and "
                   "prints top-1 accuracy.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@defence_options
@common_options
@report_errors
def classify(images, defence_text, top, labels, as_json, config, model, checkpoint, random_weights,
             device, threads, seed, max_pixels) -> None:
    """Classify IMAGES, with or without a defence in front of the classifier."""
    from ..defences.registry import build_defence
    from ..images import find_images, load_image

    names = _parse_defences(defence_text)
    truth = _read_labels(labels)
    classifier = open_classifier(model, checkpoint, random_weights, device, seed, threads)
    defences = {name: build_defence(name, classifier, config) for name in names}
    results, failures = [], 0
    for path in progress(find_images(images), "classify"):
        try:
            image = load_image(path, max_pixels, classifier.view_side)
            predictions = _classify_one(classifier, image, defences, top, seed, path.name)
        except ImageError as error:
            warn(f"error: {error}")
            failures += 1
            continue
        label = truth.get(path.name)
        results.append({"file": str(path), "label": label,
                        "label_name": classifier.class_name(label) if label is not None else None,
                        "predictions": predictions})
        if not as_json:
            say(_prediction_text(results[-1]))
    accuracy = _accuracy(results, names)
    if as_json:
        document = {
            "model": classifier.name,
            "defence_config": config.to_dict() if any(DEFENCES[name].is_ciid for name in names) else None,
            "results": results,
            "accuracy": accuracy,
            "failed": failures,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        for name, counts in accuracy.items():
            click.echo(f"top-1 accuracy, defence {name}: {counts['correct']}/{counts['images']} = "
                       f"{100 * counts['top1']:.1f}%")
    if failures:
        raise CommandFailed(f"{failures} of {failures + len(results)} images failed")


def _prediction_text(result: dict) -> str:
    columns = [result["file"]]
    for name, predictions in result["predictions"].items():
        shown = ", ".join(f"{p['name']} ({p['probability']:.3f})" for p in predictions)
        columns.append(f"{name}: {shown}")
    if result["label"] is not None:
        columns.append(f"label: {result['label_name']} ({result['label']})")
    return "\t".join(columns)


def _accuracy(results: list[dict], defences: list[str]) -> dict[str, dict]:
    """Per defence: ``correct``, ``images`` (those with a label) and ``top1`` (their ratio)."""
    labelled = [r for r in results if r["label"] is not None]
    if not labelled:
        return {}
    found = {}
    for name in defences:
        correct = sum(r["predictions"][name][0]["class"] == r["label"] for r in labelled)
        found[name] = {"correct": correct, "images": len(labelled), "top1": correct / len(labelled)}
    return found


def _check_output_folder(out: Path, paths: list[Path], overwrite: bool) -> None:
    """Refuse an --out that is, or lies inside, a folder of the inputs (their originals could be replaced)."""
    resolved = out.resolve()
    for folder in {path.resolve().parent for path in paths}:
        if (resolved == folder or folder in resolved.parents) and not overwrite:
            raise CommandFailed(f"--out {out} is or lies inside {folder}, which holds input images; choose "
                                f"another folder, or pass --overwrite", exit_code=2)


def _write_atomically(image: torch.Tensor, out: Path, target: Path) -> None:
    """Write a PNG to a fresh, unpredictable temporary file in ``out``, then rename it onto ``target``."""
    from ..images import save_image

    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".partial.png", dir=out)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            save_image(image, handle, format="PNG")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@main.command("purify")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the purified PNGs (created if missing).")
@click.option("--defence", "defence_name", type=click.Choice([name for name in DEFENCES if name != "none"]),
              default="ciid", show_default=True)
@click.option("--overwrite", is_flag=True,
              help="Replace files already in --out, and allow --out inside a folder of the inputs.")
@defence_options
@common_options
@report_errors
def purify_command(images, out_dir, defence_name, overwrite, config, model, checkpoint, random_weights, device,
                   threads, seed, max_pixels) -> None:
    """Write a purified PNG of each of IMAGES, at its own size, into --out.

    Each PNG is written to a temporary file in --out and renamed when
    complete, so a killed run keeps every finished image and no partial one.
    """
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
    failures = 0
    for path in progress(paths, "purify"):
        target = out / f"{path.stem}.png"
        problem = None
        if target.name in written:
            problem = f"{path}: another input already wrote {target}"
        elif target.is_symlink() or (target.exists() and not target.is_file()):
            problem = f"{target} is a link or not a regular file; refusing to write through it"
        elif target.exists() and not overwrite:
            problem = f"{target} already exists; pass --overwrite to replace it"
        elif target.resolve().parent != out.resolve():
            problem = f"{target} resolves outside --out {out}"
        if problem:
            warn(f"error: {problem}")
            failures += 1
            continue
        try:
            image = load_image(path, max_pixels, classifier.view_side)[None].to(next(classifier.parameters()).device)
            purified = defence(image, generator=seeded_generator(seed, path.name, defence.digest))[0]
        except ImageError as error:
            warn(f"error: {error}")
            failures += 1
            continue
        _write_atomically(purified, out, target)
        written.add(target.name)
    warn(f"wrote {len(written)} purified images to {out}")
    if failures:
        raise CommandFailed(f"{failures} of {len(paths)} images failed")


@main.command()
@click.argument("image", type=click.Path())
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Figure file (.png, .pdf or .svg).")
@defence_options
@common_options
@report_errors
def explain(image, out_path, config, model, checkpoint, random_weights, device, threads, seed, max_pixels) -> None:
    """Draw every step of CIIDefence on IMAGE into one figure."""
    import torch

    from ..defences.ciid import purify
    from ..images import load_image
    from .explain import explain_figure

    if config.regions != "cam":
        raise CommandFailed("explain draws the CAM-selected regions; use --regions cam", exit_code=2)
    classifier = open_classifier(model, checkpoint, random_weights, device, seed, threads)
    config.check_coverage(classifier.input_size)
    batch = load_image(image, max_pixels, classifier.view_side)[None].to(next(classifier.parameters()).device)
    purification = purify(batch, classifier, config)
    with torch.no_grad():
        defended_logits = classifier(purification.output)[0]
    figure = explain_figure(classifier, batch[0], purification, defended_logits, config, title=Path(image).name)
    figure.savefig(out_path, dpi=150, bbox_inches="tight")
    warn(f"wrote {out_path}")


from .evaluate import evaluate, report  # noqa: E402  (they use main's helpers)
from .sweep import sweep  # noqa: E402
from .train import export_inpainter, train_denoiser, train_inpainter  # noqa: E402

main.add_command(train_inpainter)
main.add_command(export_inpainter)
main.add_command(train_denoiser)
main.add_command(evaluate)
main.add_command(report)
main.add_command(sweep)

if __name__ == "__main__":
    main()
