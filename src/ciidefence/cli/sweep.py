"""``ciid sweep``: score many CIIDefence configurations against the same attacks."""

from __future__ import annotations

import click

from ..attacks import parse_eps
from ..defences.registry import RIVALS
from .evaluate import execute_run
from .options import defence_options, parse_cluster, parse_shard, run_options, split_names
from .session import CommandFailed, report_errors, warn

# the grid of docs/JOURNAL.md, issue 12
DEFAULT_GRID = ("sigma=0.015,0.02,0.025,0.03,0.04", "top_k=1,3", "half_width=4,8")


@click.command()
@click.option("--grid", "grid_specs", multiple=True, metavar="NAME=V1,V2,...",
              help=f"Values of one CIIDefence parameter (repeatable) [default: {' '.join(DEFAULT_GRID)}].")
@click.option("--point", "point_specs", multiple=True, metavar="'NAME=V NAME=V ...'",
              help="Also score this one point (repeatable), e.g. an ablation: --point 'regions=none sigma=0.04'.")
@click.option("--random", "samples", type=click.IntRange(1), default=None,
              help="Score this many grid points drawn at random instead of the whole grid.")
@click.option("--rivals", default=",".join(RIVALS), show_default=True,
              help="Other defences scored beside the points, for the Pareto plot ('' for none).")
@click.option("--attacks", default="fgsm,pgd", show_default=True, help="Gray-box attacks scoring robustness.")
@click.option("--eps", "eps_text", default="2/255", show_default=True, help="L-inf budgets.")
@run_options
@defence_options
@report_errors
def sweep(data, labels, models, checkpoint, random_weights, grid_specs, point_specs, samples, rivals, attacks,
          eps_text, limit, batch_size, resolution, run_dir, resume, retry_errors, dry_run, shard_text, ray_address,
          workers, threads_per_worker, ship_data, device, threads, seed, max_pixels, config) -> None:
    """Score CIIDefence configurations for clean and gray-box robust accuracy.

    Every point starts from the --strength, --top-k ... options with the
    --grid values (every combination) or a --point's. The attacks run once per
    image on the bare classifier; every point and rival is scored on the same
    adversarial images. Results go to RUN_DIR/results.sqlite; sweep.md and
    pareto.png name the three operating points (light: the most robust within
    2 points of the undefended clean accuracy; balanced: the highest mean of
    clean and robust accuracy; strong: the most robust at 75% clean or more),
    chosen among the points with CAM boxes and denoising. Points whose boxes
    could cover more than half the image are recorded as invalid, not scored.
    """
    from ..evaluation.plan import RunConfig
    from ..evaluation.sweep import parse_grid, parse_point, sweep_points

    if len(models) > 1:
        raise CommandFailed("a sweep tunes CIIDefence for one classifier: give one --model", exit_code=2)
    grid = parse_grid(grid_specs or (() if point_specs else DEFAULT_GRID))
    points = sweep_points(config, grid, samples, seed, tuple(parse_point(spec) for spec in point_specs))
    run_config = RunConfig(
        data=data, labels=labels,
        model=models[0], checkpoint=checkpoint, random_weights=random_weights,
        defences=("none", *split_names(rivals)), ciid=config.to_dict(), attacks=split_names(attacks),
        eps=tuple(parse_eps(e) for e in split_names(eps_text)), limit=limit, batch_size=batch_size, seed=seed,
        sanity=False, sweep=tuple(points), max_pixels=max_pixels, shard=parse_shard(shard_text),
        resolution=resolution,
    )
    warn(f"sweep: {len(points)} CIIDefence points and {len(run_config.defences) - 1} other defences")
    execute_run(run_config, run_dir, resume, dry_run, device, threads, report="sweep", retry_errors=retry_errors,
                cluster=parse_cluster(ray_address, workers, threads_per_worker, ship_data))
