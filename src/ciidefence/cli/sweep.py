"""``ciid sweep``: score many CIIDefence configurations against the same attacks."""

from __future__ import annotations

from pathlib import Path

import click

from ..attacks import parse_eps
from ..defences import RIVALS
from ..evaluation import Evaluation, RunConfig, open_run
from ..evaluation.runner import tqdm_progress
from ..evaluation.sweep import parse_grid, sweep_points, write_sweep_report
from .options import defence_options, split_names
from .session import report_errors, resolve_device, seed_everything, warn

DEFAULT_GRID = ("sigma=0.015,0.02,0.025,0.03,0.04", "top_k=1,3", "half_width=4,8")  # the grid of docs/RESULTS.md


@click.command()
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="Folder of images with labels.csv, or one subfolder per WordNet id.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None)
@click.option("--model", default="efficientnet_lite0", show_default=True)
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None)
@click.option("--random-weights", is_flag=True, hidden=True)
@click.option("--grid", "grid_specs", multiple=True, metavar="NAME=V1,V2,...",
              help=f"Values of one CIIDefence parameter (repeatable) [default: {' '.join(DEFAULT_GRID)}].")
@click.option("--random", "samples", type=click.IntRange(1), default=None,
              help="Score this many grid points drawn at random instead of the whole grid.")
@click.option("--rivals", default=",".join(RIVALS), show_default=True,
              help="Other defences scored beside the points, for the Pareto plot ('' for none).")
@click.option("--attacks", default="fgsm,pgd", show_default=True, help="Gray-box attacks scoring robustness.")
@click.option("--eps", "eps_text", default="2/255", show_default=True, help="L-inf budgets.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N images.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out; finished batches are kept.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@defence_options
@report_errors
def sweep(data, labels, model, checkpoint, random_weights, grid_specs, samples, rivals, attacks, eps_text, limit,
          batch_size, run_dir, resume, device, seed, config) -> None:
    """Score CIIDefence configurations for clean and gray-box robust accuracy.

    Every point starts from the --top-k ... options with the --grid values.
    The attacks run once per image on the bare classifier; every point and
    rival is scored on the same adversarial images. Results go to
    RUN_DIR/results.sqlite; sweep.md and pareto.png name the best point whose
    clean accuracy is within 2 points of the undefended model.
    """
    points = sweep_points(config, parse_grid(grid_specs or DEFAULT_GRID), samples, seed)
    run_config = RunConfig(
        data=str(Path(data).resolve()), labels=str(Path(labels).resolve()) if labels else None,
        model=model, checkpoint=checkpoint, random_weights=random_weights,
        defences=("none", *split_names(rivals)), ciid=config.to_dict(), attacks=split_names(attacks),
        eps=tuple(parse_eps(e) for e in split_names(eps_text)), limit=limit, batch_size=batch_size, seed=seed,
        sanity=False, sweep=tuple(points),
    )
    seed_everything(seed)
    warn(f"sweep: {len(points)} CIIDefence points and {len(run_config.defences) - 1} other defences")
    store = open_run(run_dir, run_config, resume)
    try:
        Evaluation(run_config, store, resolve_device(device), progress=tqdm_progress).run()
    finally:
        store.close()
    paths = write_sweep_report(run_dir)
    click.echo(paths["sweep.md"].read_text())
    warn(f"results in {Path(run_dir) / 'results.sqlite'}; plot in {paths['pareto.png']}")
