"""Pictures of what a run did, for the HTML report: the adversarial and defended images of its first batch.

A run stores predictions, not images. :func:`remake_first_batch` rebuilds
the run's evaluation from its stored configuration and runs its first
batch again through the runner's own steps (same seeds, same groups, same
draws), so the pictures are the images the rows were scored on; each
picture says whether the predictions made now match the stored ones.
CIIDefence's pictures carry the boxes it inpainted.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..defences.ciid import CIIDefence, purify
from ..errors import ConfigError
from .plan import RunConfig
from .run_folder import read_run
from .runner import Evaluation
from .store import ResultRow

PICTURE_SIDE = 160
BOX_COLOUR = (255, 212, 0)


@dataclass(frozen=True)
class Picture:
    """One image of a run's first batch under one experiment, as one defence received and returned it."""

    image: str
    experiment: str
    defence_hash: str
    adversarial: str
    """JPEG data URI of the attacked image (the clean one under the clean experiment)."""
    defended: str
    """JPEG data URI of the defence's output, CIIDefence's inpainted boxes outlined."""
    reproduced: bool
    """Whether the undefended and defended predictions made now equal the stored row's."""

    @property
    def key(self) -> str:
        return picture_key(self.image, self.experiment, self.defence_hash)


def picture_key(image: str, experiment: str, defence_hash: str) -> str:
    return f"{image}|{experiment}|{defence_hash}"


def remake_first_batch(run_dir: str | Path, progress: Callable[[str], None] | None = None) -> list[Picture]:
    """Every picture of ``run_dir``'s first batch of images, under each of its main (and sweep) experiments and
    each defence scored there, for the run's first model.

    Raises
    ------
    ConfigError
        If the run stores no configuration, or its data folder cannot be read (the images are needed).
    """
    run = read_run(run_dir)
    if not run.config:
        raise ConfigError(f"{run_dir}: no stored configuration to remake its images from")
    config = RunConfig.from_stored(run.config)
    evaluation = Evaluation(config, torch.device("cpu"))
    stored = {(row.image, row.experiment, row.defence_hash): row for row in run.rows
              if row.model == evaluation.classifier.name and row.error is None}
    batch = evaluation.batches()[0]
    pictures = []
    for experiment in evaluation.experiments:
        if experiment.purpose not in ("main", "sweep"):
            continue
        if progress is not None:
            progress(experiment.describe())
        _, groups = evaluation.readable_groups(experiment, batch)
        for group, images in groups:
            _, adversarial, pred_adv = evaluation.attacked(experiment, group, images)
            for defence in evaluation.scored_defences(experiment):
                if isinstance(defence.module, CIIDefence):
                    generators = evaluation.defence_generators(experiment, group, defence)
                    purification = purify(evaluation.defence_input(adversarial), evaluation.classifier,
                                          defence.module.config, generator=generators)
                    defended = purification.output
                    boxes: list[torch.Tensor | None] = [purification.boxes[i][purification.box_valid[i]]
                                                        for i in range(len(group))]
                else:
                    defended, _ = evaluation.defended(defence, experiment, group, adversarial)
                    boxes = [None] * len(group)
                with torch.no_grad():
                    pred_defended = evaluation.classifier(defended).argmax(1).tolist()
                for i, item in enumerate(group):
                    row = stored.get((item.key, experiment.digest, defence.digest))
                    pictures.append(Picture(
                        item.key, experiment.digest, defence.digest, _data_uri(adversarial[i]),
                        _data_uri(defended[i], boxes[i]),
                        row is not None and _same(row, pred_adv[i], pred_defended[i], defence.identity)))
    return pictures


def _same(row: ResultRow, pred_adv: int, pred_defended: int, identity: bool) -> bool:
    return row.pred_adv == pred_adv and (identity or row.pred_defended_adv == pred_defended)


def _data_uri(image: torch.Tensor, boxes: torch.Tensor | None = None) -> str:
    """A small JPEG of ``image`` ``(3, H, W)``, with ``boxes`` ``(N, 4)`` (y0, x0, y1, x1) outlined."""
    from PIL import Image, ImageDraw

    array = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    picture = Image.fromarray(array)
    if boxes is not None and len(boxes):
        draw = ImageDraw.Draw(picture)
        width = max(1, round(max(picture.size) / PICTURE_SIDE))
        for y0, x0, y1, x1 in boxes.tolist():
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=BOX_COLOUR, width=width)
    picture.thumbnail((PICTURE_SIDE, PICTURE_SIDE))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
