"""``ciid certify``: certified L2 radii of the smoothed classifier, per noise level and front, resumable."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..defences.config import STRENGTHS
from ..images import DEFAULT_MAX_PIXELS
from ..progress import duration
from .options import SEED, THREADS, cluster_options, parse_cluster, split_names
from .session import CommandFailed, report_errors, resolve_device, say, seed_everything, set_threads, warn


@click.command()
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="Folder of images with labels.csv (file,class_index), or one subfolder per WordNet id.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Labels CSV with columns file,class_index [default: DATA/labels.csv].")
@click.option("--model", default="efficientnet_lite0", show_default=True, help="The classifier, unchanged.")
@click.option("--sigma", "sigma_text", default="0.25", show_default=True,
              help="Noise levels (comma-separated), in [0, 1] pixel units at the classifier's view.")
@click.option("--denoiser", "front_text", default="learned", show_default=True,
              help="Fronts smoothed (comma-separated): none, wavelet (CIIDefence's shrinkage at the noise's sigma), "
                   "learned (the shipped Gaussian denoiser), or any defence name (ciid takes --strength).")
@click.option("--denoiser-model", type=click.Path(dir_okay=False), default=None,
              help="Weights of the learned denoiser (safetensors, from ciid train-denoiser) [default: shipped].")
@click.option("--strength", type=click.Choice(STRENGTHS), default="balanced", show_default=True,
              help="CIIDefence's configuration, where a front is CIIDefence or the wavelet shrinkage.")
@click.option("--n0", type=click.IntRange(1), default=100, show_default=True, help="Draws that select the class.")
@click.option("--n", type=click.IntRange(1), default=1000, show_default=True,
              help="Draws that bound its probability (the largest radius is about sigma x Phi^-1(alpha^(1/n))).")
@click.option("--alpha", type=click.FloatRange(0, 0.5, min_open=True, max_open=True), default=0.001,
              show_default=True, help="The certificate is wrong with probability at most alpha.")
@click.option("--batch-size", type=click.IntRange(1), default=100, show_default=True, help="Noisy copies at once.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N images.")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder (created; never overwritten).")
@click.option("--resume", is_flag=True, help="Continue the run in --out; finished certificates are kept.")
@click.option("--retry-errors", is_flag=True, help="With --resume: certify again the images that recorded errors.")
@click.option("--dry-run", is_flag=True, help="Print the plan and its estimated time from a short measurement.")
@click.option("--check-attack", "check_limit", type=click.IntRange(1), default=None, metavar="N",
              help="Then check the certificates of the first N images: SmoothAdv (Salman et al. 2019) attacks each "
                   "certified image inside its radius, and the report counts those whose answer it flips (a sound "
                   "certificate: none).")
@click.option("--check-steps", type=click.IntRange(1), default=20, show_default=True, help="SmoothAdv's PGD steps.")
@click.option("--check-samples", type=click.IntRange(1), default=16, show_default=True,
              help="Noise draws SmoothAdv averages per step.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)
@click.option("--threads", type=THREADS, default=None,
              help="CPU threads for torch [default: every CPU this process may use].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of every noise draw.")
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True)
@cluster_options
@report_errors
def certify(data, labels, model, sigma_text, front_text, denoiser_model, strength, n0, n, alpha, batch_size, limit,
            run_dir, resume, retry_errors, dry_run, check_limit, check_steps, check_samples, device, threads, seed,
            max_pixels, ray_address, workers, threads_per_worker, ship_data) -> None:
    """Certify each image's L2 radius under randomized smoothing (Cohen et al. 2019) of a front and the classifier.

    For each sigma and front, CERTIFY draws N0 + N noisy copies of each image;
    the smoothed classifier's answer cannot be changed by any perturbation
    smaller than the certified radius (with probability 1 - alpha). Writes
    RUN_DIR/results.sqlite, certify.md, certify.csv, certify.json and
    certified_accuracy.png.
    """
    from ..attacks import parse_eps
    from ..defences.config import strength_config
    from ..evaluation.certification import Certification, CertifyConfig
    from ..evaluation.certify_report import write_certification_report
    from ..evaluation.run_folder import open_run, open_written
    from ..progress import tqdm_bar

    if retry_errors and not resume:
        raise CommandFailed("--retry-errors certifies the failed images of a run again: give it with --resume",
                            exit_code=2)
    cluster = parse_cluster(ray_address, workers, threads_per_worker, ship_data)
    set_threads(threads)
    seed_everything(seed)
    config = CertifyConfig(data=data, labels=labels, model=model,
                           sigmas=tuple(parse_eps(s) for s in split_names(sigma_text)),
                           fronts=split_names(front_text), n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                           limit=limit, seed=seed, ciid=strength_config(strength).to_dict(),
                           denoiser_model=denoiser_model, max_pixels=max_pixels)
    certification = Certification(config, resolve_device(device))  # checks everything; writes nothing
    if dry_run:
        written = open_written(run_dir, config) if resume else None
        try:
            _dry_run(certification, written, cluster)
        finally:
            if written is not None:
                written.close()
        return
    if cluster is not None:
        from ..evaluation.cluster import connect

        connect(cluster.address)  # an unreachable cluster stops here, before the run folder exists
    with open_run(run_dir, config, resume) as store:
        progress = lambda total: tqdm_bar(total, "certify", "image")  # noqa: E731
        if retry_errors:
            warn(f"--retry-errors: {certification.forget_failed(store)} certificates that recorded errors run again")
        if cluster is not None:
            from ..evaluation.cluster import certify_on_ray

            certify_on_ray(certification, store, cluster, str(certification.device), progress)
        else:
            certification.run(store, progress)
        if check_limit is not None:
            certification.check(store, check_limit, check_steps, check_samples,
                                lambda total: tqdm_bar(total, "check", "image"))
    paths = write_certification_report(run_dir)
    say(paths["certify.md"].read_text())
    warn(f"results in {Path(run_dir) / 'results.sqlite'}; plot in {paths['certified_accuracy.png']}")


def _dry_run(certification, written=None, cluster=None) -> None:
    """Time one batch of noisy copies through each setting's front and the classifier, and scale it up."""
    import torch

    from ..images import load_image

    config = certification.config
    item = certification.images[0]
    view = certification.classifier.prepare(
        load_image(item.path, config.max_pixels, certification.classifier.view_side)[None].to(certification.device))
    batch = view.expand(min(config.batch_size, config.n0 + config.n), -1, -1, -1).clone()
    left = {setting.digest: len(certification.images) for setting in certification.settings}
    if written is not None:
        left = {digest: 0 for digest in left}
        for setting, _, _ in certification.pending(written):
            left[setting.digest] += 1
    click.echo(f"plan: {len(certification.images)} images x {len(certification.settings)} settings, model "
               f"{certification.classifier.name}; N0 = {config.n0}, N = {config.n}, {config.batch_size} copies at "
               f"once")
    total = 0.0
    for setting in certification.settings:
        front = certification.fronts[setting.digest]
        with torch.no_grad():
            certification.classifier(front(batch))  # warm-up
            started = time.perf_counter()
            certification.classifier(front(batch))
        per_copy = (time.perf_counter() - started) / len(batch)
        seconds = per_copy * (config.n0 + config.n) * left[setting.digest]
        total += seconds
        click.echo(f"  {setting.describe():28s} {1000 * per_copy:6.1f} ms per noisy copy, "
                   f"{per_copy * (config.n0 + config.n):6.1f} s per image, {left[setting.digest]} images left: "
                   f"~{duration(seconds)}")
    click.echo(f"estimated {'time left' if written is not None else 'total'}: {duration(total)}")
    if cluster is not None:
        from ..evaluation.cluster import cluster_cpus, connect

        connect(cluster.address)
        cpus = cluster_cpus()
        workers = cluster.worker_count(cpus)
        core_seconds = total * torch.get_num_threads()
        click.echo(f"ray: {core_seconds / 3600:.2f} core-hours (measured with {torch.get_num_threads()} threads "
                   f"here); about {duration(core_seconds / min(cpus, workers * cluster.threads_per_worker))} with "
                   f"{workers} workers x {cluster.threads_per_worker} threads")

