"""``ciid evaluate`` and ``ciid report``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..attacks import ATTACKS, attack_spec, parse_eps
from ..defences.bpda import APPROXIMATIONS
from ..defences.registry import ABLATIONS, DEFENCES, PLUGIN_GROUP, RIVALS, registered_plugins
from ..errors import ConfigError
from ..evaluation.plan import PROTOCOLS
from ..progress import duration
from .options import defence_options, parse_cluster, parse_shard, run_options, split_names
from .session import CommandFailed, report_errors, resolve_device, say, seed_everything, set_threads, warn

if TYPE_CHECKING:

    from ..evaluation.plan import RunConfig

DEFAULT_ATTACKS = "fgsm,bim,pgd"

PRESETS = {
    # The shape of the paper's comparison: every defence in rows; gray-box FGSM,
    # I-FGSM, PGD, DeepFool and C&W, and white-box BPDA-PGD, in columns.
    "paper": {
        "defences": ",".join(("none", "ciid", *ABLATIONS, *RIVALS)),
        "attacks": "fgsm,bim,pgd,deepfool,cw",
        "eps_text": "2/255,4/255",
        "threat_text": "graybox,bpda",
        "bpda_attacks_text": "pgd",
        "bpda_eps_text": "4/255",
        "eot_samples": 4,
    },
    # The adaptive attacker a reviewer asks for (Tramer et al. 2020; Athalye et al. 2018): BPDA with PGD and
    # APGD-CE/DLR at 50 steps, every approximation, EOT over 20 samples on the randomised defences, and the
    # convergence check that flags any attack still gaining at its last step or sample count.
    "adaptive": {
        "defences": ",".join(("none", "ciid", *ABLATIONS, *RIVALS)),
        "attacks": "pgd,apgd-ce,apgd-dlr",
        "eps_text": "4/255",
        "threat_text": "bpda",
        "eot_samples": 20,
        "attack_param": ("pgd.max_iter=50", "apgd-ce.max_iter=50", "apgd-dlr.max_iter=50"),
        "convergence": True,
    },
}


def _apply_preset(context: click.Context, name: str | None, values: dict) -> dict:
    """Fill the options the user did not give from preset ``name``."""
    if name is None:
        return values
    preset = PRESETS[name]
    for key, value in preset.items():
        if context.get_parameter_source(key) in (click.core.ParameterSource.DEFAULT, None):
            values[key] = value
    return values


def _attack_overrides(pairs: tuple[str, ...]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for pair in pairs:
        target, _, value = pair.partition("=")
        attack, _, key = target.partition(".")
        if not value or not key:
            raise ConfigError(f"--attack-param {pair!r}: expected ATTACK.KEY=VALUE, e.g. pgd.max_iter=20")
        attack_spec(attack)
        overrides.setdefault(attack, {})[key] = value
    return overrides

_INSTALLED = sorted(registered_plugins())  # plug-in defences of installed packages, read once for --help


@click.command()
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="Defaults for the options you do not give: 'paper' runs every defence under the paper's "
                   "gray-box attacks and BPDA-PGD at 4/255; 'adaptive' under BPDA with PGD, APGD-CE and APGD-DLR "
                   "at 50 steps, EOT 20 and the convergence check.")
@click.option("--defences", default="none,ciid", show_default=True,
              help=f"Any of: {', '.join(DEFENCES)}; or your own, as package.module:factory or a name an installed "
                   f"package registers under the entry points '{PLUGIN_GROUP}' (docs/PLUGINS.md)"
                   + (f"; installed: {', '.join(_INSTALLED)}." if _INSTALLED else "."))
@click.option("--attacks", default=DEFAULT_ATTACKS, show_default=True, help=f"Any of: {', '.join(ATTACKS)}.")
@click.option("--eps", "eps_text", default="2/255,4/255", show_default=True,
              help="L-inf budgets for bounded attacks (fractions allowed).")
@click.option("--eps-l2", "eps_l2_text", default="0.5,1", show_default=True,
              help="Absolute L2 budgets for the L2 attacks (fgsm-l2, bim-l2, pgd-l2).")
@click.option("--eps-nl2", "eps_nl2_text", default="", show_default=True,
              help="Normalised L2 budgets for the L2 attacks, e.g. 0.02,0.03,0.05: each image's L2 radius is "
                   "that fraction of its own L2 norm (the papers' convention).")
@click.option("--threat", "threat_text", default="graybox", show_default=True,
              help="Comma-separated: graybox, bpda, transfer (with --transfer-from).")
@click.option("--bpda-approx", "approx_text", default=",".join(APPROXIMATIONS), show_default=True,
              help="BPDA backward approximations.")
@click.option("--bpda-attacks", "bpda_attacks_text", default=None,
              help="Attacks to run under BPDA [default: all of --attacks].")
@click.option("--bpda-eps", "bpda_eps_text", default=None,
              help="Budgets to run under BPDA [default: all of --eps / --eps-l2].")
@click.option("--eot", "eot_samples", type=click.IntRange(1), default=1, show_default=True,
              help="Gradient samples averaged per BPDA attack step (EOT), for randomised defences.")
@click.option("--eval-draws", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How often a randomised defence scores each image, each time with its own draws: the summary "
                   "gives the first draw's accuracy, the worst case over the draws and their majority vote.")
@click.option("--transfer-from", "transfer_text", default="",
              help="With --threat transfer: classifiers the attacks are made on (comma-separated); every defence of "
                   "--model is scored on their adversarial images (the black-box number).")
@click.option("--convergence", is_flag=True,
              help="Check that every BPDA attack converged: rerun it with 10, 20 and 50 steps and, on randomised "
                   "defences, with 1, 5 and 20 EOT samples; the summary flags attacks still gaining at the last "
                   "point and plots convergence.png.")
@click.option("--attack-param", "attack_param", multiple=True, metavar="ATTACK.KEY=VALUE",
              help="Override an attack parameter, e.g. pgd.max_iter=20 (repeatable).")
@click.option("--no-sanity", is_flag=True, help="Skip the sanity-check attacks on the undefended model.")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="all", show_default=True,
              help="all: score every image; paper: attack and score only the images the undefended classifier "
                   "gets right (Pixel Deflection's and CIIDefence's tables).")
@run_options
@defence_options
@report_errors
@click.pass_context
def evaluate(context, preset, **options) -> None:
    """Attack, defend and score; write every image's outcome to RUN_DIR/results.sqlite.

    Writes summary.md, summary.csv, summary.json, accuracy_vs_eps.png and
    accuracy_table.png into --out at the end; `ciid report` rebuilds them from
    the database. CIIDefence's ablations start from the --top-k ... options.
    """
    _evaluate(**_apply_preset(context, preset, options))


def _evaluate(data, labels, models, checkpoint, random_weights, defences, attacks, eps_text, eps_l2_text, eps_nl2_text,
              threat_text, approx_text, bpda_attacks_text, bpda_eps_text, eot_samples, eval_draws, transfer_text,
              convergence,
              attack_param, limit, batch_size, resolution, run_dir, resume, retry_errors, dry_run, shard_text,
              ray_address, workers, threads_per_worker, ship_data, no_sanity, protocol, device, threads, seed,
              max_pixels, config) -> None:
    from ..evaluation.plan import RunConfig

    run_config = RunConfig(
        data=data, labels=labels,
        model=models[0], extra_models=models[1:], checkpoint=checkpoint, random_weights=random_weights,
        defences=split_names(defences), ciid=config.to_dict(), attacks=split_names(attacks),
        attack_overrides=_attack_overrides(attack_param),
        eps=tuple(parse_eps(e) for e in split_names(eps_text)),
        eps_l2=tuple(parse_eps(e, upper=float("inf")) for e in split_names(eps_l2_text)),
        eps_nl2=tuple(parse_eps(e) for e in split_names(eps_nl2_text)),
        threats=split_names(threat_text), approximations=split_names(approx_text),
        bpda_attacks=split_names(bpda_attacks_text) if bpda_attacks_text else None,
        bpda_eps=tuple(parse_eps(e, upper=float("inf")) for e in split_names(bpda_eps_text)) if bpda_eps_text else None,
        eot_samples=eot_samples, eval_draws=eval_draws,
        limit=limit, batch_size=batch_size, seed=seed, sanity=not no_sanity, max_pixels=max_pixels,
        protocol=protocol, convergence=convergence, transfer_from=split_names(transfer_text),
        shard=parse_shard(shard_text), resolution=resolution,
    )
    cluster = parse_cluster(ray_address, workers, threads_per_worker, ship_data)
    execute_run(run_config, run_dir, resume, dry_run, device, threads, report="evaluate", cluster=cluster,
                retry_errors=retry_errors)


def execute_run(run_config: RunConfig, run_dir: str, resume: bool, dry_run: bool, device: str,
                threads: int | None, report: str, cluster=None, retry_errors: bool = False) -> None:
    """Check everything, then (unless a dry run) open the run folder, run (here, or on Ray with ``cluster``),
    and report. Shared by evaluate and sweep. A unit that fails is recorded as error rows and the run goes on;
    ``retry_errors`` (with ``resume``) reruns those units first."""
    from ..evaluation.api import run_evaluation
    from ..evaluation.run_folder import open_written
    from ..evaluation.runner import Evaluation, tqdm_progress

    if retry_errors and not resume:
        raise CommandFailed("--retry-errors reruns the failed batches of a run: give it with --resume", exit_code=2)
    set_threads(threads)
    seed_everything(run_config.seed)
    torch_device = resolve_device(device)
    evaluations = [Evaluation(run_config, torch_device, progress=tqdm_progress, model=model)  # checks; writes nothing
                   for model in run_config.models]
    if dry_run:
        written = open_written(run_dir, run_config) if resume else None
        try:
            for evaluation in evaluations:
                _dry_run(evaluation, cluster, written)
        finally:
            if written is not None:
                written.close()
        return
    outcome = run_evaluation(evaluations, run_dir, resume, cluster, retry_errors, tqdm_progress,
                             on_retry=lambda units: warn(f"--retry-errors: {units} batches that recorded errors run "
                                                         f"again"))
    if outcome.failed:
        warn(f"{outcome.failed} images of some experiments recorded errors (see the summary); "
             f"rerun their batches with --resume --retry-errors")
    if report == "evaluate":
        from ..evaluation.summary import glance_text, write_report

        paths = write_report(run_dir)
        say(glance_text(run_dir))
        warn(f"results in {Path(run_dir) / 'results.sqlite'}; full summary in {paths['summary.md']}")
    else:
        from ..evaluation.sweep import write_sweep_report

        paths = write_sweep_report(run_dir)
        say(paths["sweep.md"].read_text())
        warn(f"results in {Path(run_dir) / 'results.sqlite'}; plot in {paths['pareto.png']}")


def _dry_run(evaluation, cluster=None, written=None) -> None:
    """Print the experiments, their gradient evaluations, and a time estimate from a short measurement
    (:func:`~ciidefence.evaluation.estimate.estimate`); with ``written`` (the store of a run being resumed),
    what is left; with ``cluster`` (``--ray``), also the units, the core-hours and the wall time there."""
    from ..evaluation.estimate import cluster_estimate, estimate

    found = estimate(evaluation, written)
    parts = found.parts
    click.echo(f"plan: {found.images} images, model {evaluation.classifier.name}; measured "
               f"{1000 * parts.gradient:.0f} ms per gradient and {1000 * parts.prediction:.0f} ms per prediction per "
               f"image, and per image for each defence: "
               + ", ".join(f"{key} {1000 * parts.defences[d.digest]:.0f} ms" for key, d in evaluation.defences.items())
               + (f"; the defences' times multiplied by {found.defence_scale:.2f}, the run's mean pixels per image "
                  f"over the measured images'" if found.defence_scale != 1.0 else ""))
    for cost in found.experiments:
        click.echo(f"  {cost.experiment.describe():48s} {cost.experiment.purpose:6s} ~{cost.gradients:5.0f} "
                   f"gradients/img  ~{duration(cost.seconds):>8s}"
                   + (f"  ({cost.images} of {found.images} images left)" if found.resumed else "")
                   + ("  measured" if cost.measured else ""))
    label = "time left" if found.resumed else "total"
    if found.from_measurements:
        click.echo(f"estimated {label}: {duration(found.from_parts + found.from_measurements)} "
                   f"({duration(found.from_measurements)} of it from the seconds per image this run measured; the "
                   f"rest from measured parts, which add up to less than a run takes)")
    else:
        click.echo(f"estimated {label}: {duration(found.from_parts)} (meant as a lower bound: it adds up measured "
                   f"parts and leaves out image loading, ART's overhead and how many steps each attack really takes; "
                   f"on an idle machine experiments have taken 0.9 to 1.7 times it, and another heavy job beside the "
                   f"run slows it several times more)")
    if cluster is not None:
        from ..evaluation.cluster import cluster_cpus, connect

        connect(cluster.address)
        cpus = cluster_cpus()
        on = cluster_estimate(evaluation, found, cpus, cluster.worker_count(cpus), cluster.threads_per_worker)
        click.echo(f"ray: {on.units} units of up to {evaluation.config.batch_size} images; {on.core_hours:.2f} "
                   f"core-hours (parts measured with {on.threads_here} threads here"
                   + (f", the run's own seconds at {on.threads_per_worker} per worker" if found.from_measurements
                      else "") + "); "
                   f"about {duration(on.on_all_cpus)} on the cluster's {cpus} CPUs, "
                   f"{duration(on.on_workers)} with {on.workers} workers x {on.threads_per_worker} threads")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--compare", "other_dir", type=click.Path(file_okay=False), default=None,
              help="Another run folder: print both tables side by side, with the significant differences marked, "
                   "and write RUN_DIR/compare.md.")
@click.option("--html", is_flag=True,
              help="Also write RUN_DIR/report.html: one self-contained page (no network) with the tables, the "
                   "figures and a browser of every image's outcome, filtered by defence, attack and outcome.")
@click.option("--pictures", is_flag=True,
              help="With --html: attack and defend the run's first batch of images again, as the run did (same "
                   "seeds), and show the adversarial and defended images (CIIDefence's boxes outlined) beside their "
                   "outcomes. Needs the run's data folder; costs one batch of the run's work.")
@report_errors
def report(run_dir, other_dir, html, pictures) -> None:
    """Rebuild RUN_DIR's summary tables and plots from its results.sqlite, and print the summary (for a
    certification run, certify.md and its plot)."""
    from ..evaluation.certify_report import is_certification_run, write_certification_report
    from ..evaluation.compare import compare_markdown
    from ..evaluation.summary import write_report

    for folder in (run_dir, other_dir):
        if folder is not None and not (Path(folder) / "results.sqlite").is_file():
            raise CommandFailed(f"{folder}: no results.sqlite here", exit_code=2)
    if is_certification_run(run_dir):
        if other_dir is not None:
            raise CommandFailed(f"{run_dir} is a certification run: --compare takes evaluation runs", exit_code=2)
        click.echo(write_certification_report(run_dir)["certify.md"].read_text())
        return
    paths = write_report(run_dir)
    if pictures and not html:
        raise CommandFailed("--pictures shows images in report.html: give --html too", exit_code=2)
    if html:
        from ..evaluation.html_report import write_html_report

        remade = None
        if pictures:
            from ..evaluation.gallery import remake_first_batch

            remade = remake_first_batch(run_dir, progress=lambda what: warn(f"pictures: {what}"))
        page = write_html_report(run_dir, paths["summary.md"].read_text(),
                                 [path for name, path in paths.items() if name.endswith(".png")], remade)
        warn(f"report in {page}")
    if other_dir is None:
        click.echo(paths["summary.md"].read_text())
        return
    text = compare_markdown(run_dir, other_dir)
    (Path(run_dir) / "compare.md").write_text(text)
    click.echo(text)
