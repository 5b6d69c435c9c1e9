"""``ciid explain``: one figure showing every step of CIIDefence on an image."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..defences.ciid import Purification
from ..defences.config import CIIDefenceConfig
from ..models.base import Classifier

DIFFERENCE_GAIN = 10
"""The difference panel shows ``|output - input|`` times this: at figure scale the steps are invisible otherwise."""

_BOX_COLOURS = ("#ffd400", "#00e5ff", "#ff4fd8", "#7dff4f", "#ff8c1a", "#b388ff")


def _rgb(image: torch.Tensor) -> np.ndarray:
    return image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()


def _label(name: str, width: int = 22) -> str:
    name = name.replace("_", " ")
    return name if len(name) <= width else name[: width - 1] + "…"


def _draw_boxes(axis, boxes: torch.Tensor, valid: torch.Tensor, colour: str, shift=(0.0, 0.0), scale=1.0):
    for (y0, x0, y1, x1), ok in zip(boxes.tolist(), valid.tolist(), strict=True):
        if ok:
            axis.add_patch(Rectangle(
                ((x0 * scale - shift[1]) - 0.5, (y0 * scale - shift[0]) - 0.5),
                (x1 - x0) * scale, (y1 - y0) * scale,
                fill=False, edgecolor=colour, linewidth=1.6,
            ))


def explain_figure(
    classifier: Classifier,
    image: torch.Tensor,
    purification: Purification,
    defended_logits: torch.Tensor,
    config: CIIDefenceConfig,
    title: str = "",
    shown_classes: int = 5,
):
    """Build the figure: input, each top-k CAM, boxes, both branches, output, predictions.

    Parameters
    ----------
    image : torch.Tensor
        ``(3, H, W)`` the input.
    purification : Purification
        The result of :func:`~ciidefence.defences.purify` on ``image[None]``.
    defended_logits : torch.Tensor
        ``(num_classes,)`` logits of the purified image.
    """
    evidence = purification.evidence
    if evidence is None:
        raise ValueError("explain_figure needs a purification whose regions came from CAMs")
    k, p = config.top_k, config.peaks
    columns = max(k + 2, 5) + 1  # images in two rows (input, CAMs, difference; the five steps), then the bars
    figure = Figure(figsize=(2.7 * columns, 6.6), layout="constrained")
    grid = figure.add_gridspec(2, columns)
    shrink = {"bayes": "BayesShrink", "visu": "VisuShrink"}[config.threshold]
    figure.suptitle(
        f"CIIDefence on {title} — {classifier.name}, k={k}, p={p}, w={config.half_width}, "
        f"{config.inpainter} inpainting, {shrink} σ={config.sigma}, fusion: {config.fusion}; "
        f"peaks below {config.peak_threshold:.0%} of their map's maximum ignored"
        + _coinciding_boxes(purification, k, p),
        fontsize=10,
    )

    before = evidence.logits[0].softmax(0)
    after = defended_logits.softmax(0)

    axis = figure.add_subplot(grid[0, 0])
    axis.imshow(_rgb(image))
    top_class = int(before.argmax())
    axis.set_title(f"input\n{_label(classifier.class_name(top_class))} {before[top_class]:.2f}", fontsize=9)

    view = _rgb(classifier.prepare(image[None])[0])
    scale, top, left = classifier.view_geometry(*image.shape[-2:])
    for rank in range(k):
        axis = figure.add_subplot(grid[0, rank + 1])
        axis.imshow(view)
        axis.imshow(evidence.cams[0, rank].cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        chosen = slice(rank * p, (rank + 1) * p)
        _draw_boxes(axis, purification.boxes[0, chosen], purification.box_valid[0, chosen],
                    _BOX_COLOURS[rank % len(_BOX_COLOURS)], shift=(top, left), scale=scale)
        axis.set_xlim(-0.5, view.shape[1] - 0.5)
        axis.set_ylim(view.shape[0] - 0.5, -0.5)
        name = _label(classifier.class_name(int(evidence.classes[0, rank])))
        axis.set_title(f"CAM #{rank + 1}: {name}\np = {float(evidence.probabilities[0, rank]):.3f}", fontsize=9)

    mask = purification.mask[0].cpu().numpy()
    difference = (purification.output[0] - image).abs() * DIFFERENCE_GAIN
    panels = [
        (f"selected boxes ({float(purification.mask.float().mean()):.1%} of pixels)", None),
        ("mask (white: inpainted)", "mask"),
        ("inpainted", purification.inpainted[0]),
        ("denoised", purification.denoised[0]),
        ("fused output", purification.output[0]),
        (f"|output − input| × {DIFFERENCE_GAIN}", difference.clamp(0, 1)),
    ]
    for column, (name, picture) in enumerate(panels):
        axis = figure.add_subplot(grid[1, column] if column < 5 else grid[0, k + 1])
        if isinstance(picture, str):
            axis.imshow(mask, cmap="gray", vmin=0, vmax=1)
        elif picture is None:
            axis.imshow(_rgb(image))
            axis.imshow(np.ma.masked_where(~purification.mask[0].cpu().numpy(), np.ones(image.shape[-2:])),
                        cmap="autumn", alpha=0.55, vmin=0, vmax=1)
            for rank in range(k):
                chosen = slice(rank * p, (rank + 1) * p)
                _draw_boxes(axis, purification.boxes[0, chosen], purification.box_valid[0, chosen],
                            _BOX_COLOURS[rank % len(_BOX_COLOURS)])
            axis.set_xlim(-0.5, image.shape[-1] - 0.5)
            axis.set_ylim(image.shape[-2] - 0.5, -0.5)
        else:
            axis.imshow(_rgb(picture))
        axis.set_title(name, fontsize=9)

    for axis in figure.axes:
        axis.set_xticks([])
        axis.set_yticks([])

    _prediction_bars(figure.add_subplot(grid[:, -1]), classifier, before, after, shown_classes)
    return figure


def _coinciding_boxes(purification: Purification, k: int, p: int) -> str:
    """A note naming the CAMs whose boxes fall on the same spot (they then inpaint one region, not several)."""
    ranks: dict[tuple, list[int]] = {}
    for index, (box, ok) in enumerate(zip(purification.boxes[0].tolist(), purification.box_valid[0].tolist(),
                                          strict=True)):
        if ok:
            ranks.setdefault(tuple(round(v) for v in box), []).append(index // p + 1)
    shared = sorted({tuple(sorted(set(r))) for r in ranks.values() if len(set(r)) > 1})
    if not shared:
        return ""
    return "\nboxes on the same spot from CAMs " + "; ".join(" and ".join(f"#{r}" for r in group) for group in shared)


def _prediction_bars(axis, classifier: Classifier, before: torch.Tensor, after: torch.Tensor, count: int):
    classes = torch.cat((before.topk(count).indices, after.topk(count).indices)).unique(sorted=False)
    classes = sorted(classes.tolist(), key=lambda c: -float(before[c] + after[c]))[:count]
    positions = np.arange(len(classes))
    for offset, probabilities, label, colour in ((-0.2, before, "undefended", "#9e9e9e"),
                                                 (0.2, after, "CIIDefence", "#1f77b4")):
        values = [float(probabilities[c]) for c in classes]
        axis.barh(positions + offset, values, height=0.4, label=label, color=colour)
        for position, value in zip(positions, values, strict=True):
            axis.text(min(value + 0.01, 0.86), position + offset, f"{value:.2f}", va="center", fontsize=6.5)
    axis.set_yticks(positions, [_label(classifier.class_name(c), 18) for c in classes], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("probability", fontsize=8)
    axis.tick_params(axis="x", labelsize=7)
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title(
        f"prediction: {_label(classifier.class_name(int(before.argmax())), 16)} → "
        f"{_label(classifier.class_name(int(after.argmax())), 16)}",
        fontsize=9,
    )
