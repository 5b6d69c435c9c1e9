"""The ``ciid`` command-line tool."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click
import torch

from ..defences import DEFENCES, build_defence, purify
from ..errors import ImageError
from ..images import find_images, load_image, save_image
from ..models import Classifier
from .options import common_options, defence_options, split_names
from .session import CommandFailed, open_classifier, progress, report_errors, warn


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
        for p, i in zip(values, indices)
    ]


def _classify_one(
    classifier: Classifier, image: torch.Tensor, defences: dict[str, torch.nn.Module | None], top: int
) -> dict[str, list[dict]]:
    batch = image[None].to(next(classifier.parameters()).device)
    predictions = {}
    with torch.no_grad():
        for name, defence in defences.items():
            logits = classifier(batch if defence is None else defence(batch))[0]
            predictions[name] = _top(classifier, logits, top)
    return predictions


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--defence", "defence_text", default="ciid", show_default=True,
              help=f"Comma-separated, to compare: {', '.join(DEFENCES)}.")
@click.option("--top", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Predictions shown per image.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="CSV with columns file,class_index: prints top-1 accuracy.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@defence_options
@common_options
@report_errors
def classify(images, defence_text, top, labels, as_json, config, model, checkpoint, random_weights,
             device, seed, max_pixels) -> None:
    """Classify IMAGES, with or without a defence in front of the classifier."""
    names = _parse_defences(defence_text)
    truth = _read_labels(labels)
    classifier = open_classifier(model, checkpoint, random_weights, device, seed)
    defences = {name: build_defence(name, classifier, config) for name in names}
    results, failures = [], 0
    for path in progress(find_images(images), "classify"):
        try:
            predictions = _classify_one(classifier, load_image(path, max_pixels), defences, top)
        except ImageError as error:
            warn(f"error: {error}")
            failures += 1
            continue
        label = truth.get(path.name)
        results.append({"file": str(path), "label": label, "predictions": predictions})
        if not as_json:
            _print_prediction(results[-1])
    accuracy = _accuracy(results, names)
    if as_json:
        document = {
            "model": classifier.name,
            "defence_config": config.to_dict() if "ciid" in names else None,
            "results": results,
            "accuracy": accuracy,
            "failed": failures,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        for name, (correct, total) in accuracy.items():
            click.echo(f"top-1 accuracy, defence {name}: {correct}/{total} = {100 * correct / total:.1f}%")
    if failures:
        raise CommandFailed(f"{failures} of {failures + len(results)} images failed")


def _print_prediction(result: dict) -> None:
    columns = [result["file"]]
    for name, predictions in result["predictions"].items():
        shown = ", ".join(f"{p['name']} ({p['probability']:.3f})" for p in predictions)
        columns.append(f"{name}: {shown}")
    if result["label"] is not None:
        columns.append(f"label: {result['label']}")
    click.echo("\t".join(columns))


def _accuracy(results: list[dict], defences: list[str]) -> dict[str, list[int]]:
    labelled = [r for r in results if r["label"] is not None]
    if not labelled:
        return {}
    return {
        name: [sum(r["predictions"][name][0]["class"] == r["label"] for r in labelled), len(labelled)]
        for name in defences
    }


@main.command("purify")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the purified PNGs (created if missing).")
@click.option("--defence", "defence_name", type=click.Choice([name for name in DEFENCES if name != "none"]),
              default="ciid", show_default=True)
@defence_options
@common_options
@report_errors
def purify_command(images, out_dir, defence_name, config, model, checkpoint, random_weights, device, seed,
                   max_pixels) -> None:
    """Write a purified PNG of each of IMAGES, at its own size, into --out."""
    classifier = open_classifier(model, checkpoint, random_weights, device, seed)
    defence = build_defence(defence_name, classifier, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = find_images(images)
    written: set[str] = set()
    failures = 0
    for path in progress(paths, "purify"):
        target = out / f"{path.stem}.png"
        if target.name in written:
            warn(f"error: {path}: another input already wrote {target}")
            failures += 1
            continue
        try:
            image = load_image(path, max_pixels)[None].to(next(classifier.parameters()).device)
            with torch.no_grad():
                purified = defence(image)[0]
        except ImageError as error:
            warn(f"error: {error}")
            failures += 1
            continue
        partial = out / f".{target.stem}.partial.png"
        save_image(purified, partial)
        partial.replace(target)
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
def explain(image, out_path, config, model, checkpoint, random_weights, device, seed, max_pixels) -> None:
    """Draw every step of CIIDefence on IMAGE into one figure."""
    from .explain import explain_figure

    if config.regions != "cam":
        raise CommandFailed("explain draws the CAM-selected regions; use --regions cam", exit_code=2)
    classifier = open_classifier(model, checkpoint, random_weights, device, seed)
    batch = load_image(image, max_pixels)[None].to(next(classifier.parameters()).device)
    purification = purify(batch, classifier, config)
    with torch.no_grad():
        defended_logits = classifier(purification.output)[0]
    figure = explain_figure(classifier, batch[0], purification, defended_logits, config, title=Path(image).name)
    figure.savefig(out_path, dpi=150, bbox_inches="tight")
    warn(f"wrote {out_path}")


from .evaluate import evaluate, report  # noqa: E402
from .sweep import sweep  # noqa: E402

main.add_command(evaluate)
main.add_command(report)
main.add_command(sweep)

if __name__ == "__main__":
    main()
