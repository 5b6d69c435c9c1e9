"""Command-line options shared by several commands, each defined once."""

from __future__ import annotations

import dataclasses
import functools

import click
from click.core import ParameterSource

from ..defences.config import STRENGTHS, CIIDefenceConfig, strength_config
from ..denoising import THRESHOLDS, WAVELET_BACKENDS
from ..errors import ConfigError
from ..evaluation.plan import RESOLUTIONS
from ..fusion import FUSIONS
from ..images import DEFAULT_MAX_PIXELS
from ..inpainting import INPAINTER_PRECISIONS, INPAINTERS
from ..models import DEFAULT_MODEL, MODEL_NAMES
from ..regions import REGION_METHODS
from .session import CommandFailed

THREADS = click.IntRange(1, 1024)
"""``--threads``: torch crashes (exit 139) on absurd counts, so the option stops at 1,024."""
SEED = click.IntRange(0, 2**63 - 1)
"""``--seed``: what torch's generators take."""

_DEFAULTS = CIIDefenceConfig()


def split_names(text: str) -> tuple[str, ...]:
    """``"a, b,a"`` to ``("a", "b")``: comma-separated names, stripped, first occurrence kept."""
    return tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def _check_models(text: str) -> tuple[str, ...]:
    """``--model``'s comma-separated names: each one of :data:`MODEL_NAMES` or an import path (``pkg.mod:factory``,
    checked when it is built)."""
    models = split_names(text)
    unknown = [name for name in models if name not in MODEL_NAMES and ":" not in name]
    if unknown or not models:
        raise CommandFailed(f"unknown model {', '.join(unknown) or repr('')}; "
                            f"choose from: {', '.join(MODEL_NAMES)}, or package.module:factory", exit_code=2)
    return models


def _check_model(text: str) -> str:
    models = _check_models(text)
    if len(models) > 1:
        raise CommandFailed(f"--model names one classifier here, got {', '.join(models)}", exit_code=2)
    return models[0]


def _check_strength(value: str) -> str:
    try:
        strength_config(value)  # the one check of strength names, withdrawn ones included
    except ConfigError as error:
        raise click.BadParameter(str(error)) from None
    return value


_DEFENCE_OPTIONS = [
    click.option("--strength", default="balanced", show_default=True, metavar=f"[{'|'.join(STRENGTHS)}]",
                 callback=lambda context, parameter, value: _check_strength(value),
                 help="CIIDefence's operating point against a gray-box attacker (docs/JOURNAL.md, issue 12): light "
                      "costs the least clean accuracy. The options below, when given, override it; their defaults "
                      "shown are balanced's."),
    click.option("--top-k", type=click.IntRange(1, 100), default=_DEFAULTS.top_k, show_default=True,
                 help="Top-ranking classes whose CAMs choose the regions."),
    click.option("--peaks", type=click.IntRange(1), default=_DEFAULTS.peaks, show_default=True,
                 help="Local maxima taken per CAM."),
    click.option("--half-width", type=click.IntRange(0), default=_DEFAULTS.half_width, show_default=True,
                 help="Boxes are 2w+1 classifier-input pixels square."),
    click.option("--peak-threshold", type=click.FloatRange(0, 1, max_open=True), default=_DEFAULTS.peak_threshold,
                 show_default=True, help="Ignore CAM peaks below this fraction of their map's maximum."),
    click.option("--inpainter", type=click.Choice(INPAINTERS), default=_DEFAULTS.inpainter, show_default=True),
    click.option("--inpaint-radius", type=click.FloatRange(min=0, min_open=True),
                 default=_DEFAULTS.inpaint_radius, show_default=True,
                 help="Neighbourhood radius of the OpenCV inpainters (pixels)."),
    click.option("--inpainter-model", type=click.Path(dir_okay=False), default=None,
                 help="TorchScript file for --inpainter learned: model(image, mask) -> image. It is a program "
                      "and runs with your rights: it loads only with --trust-model."),
    click.option("--trust-model", is_flag=True, default=_DEFAULTS.trust_model,
                 help="Let --inpainter-model's TorchScript file load and run (only for files you trust)."),
    click.option("--inpainter-precision", type=click.Choice(INPAINTER_PRECISIONS),
                 default=_DEFAULTS.inpainter_precision, show_default=True,
                 help="Arithmetic of the deepfill network: bfloat16 is about twice as fast on CPUs with AMX or "
                      "AVX-512 BF16 and on GPUs, slower elsewhere."),
    click.option("--sigma", type=click.FloatRange(min=0), default=_DEFAULTS.sigma, show_default=True,
                 help="Noise level of the wavelet shrinkage (images in [0, 1])."),
    click.option("--wavelet", default=_DEFAULTS.wavelet, show_default=True, help="PyWavelets wavelet name."),
    click.option("--wavelet-levels", type=click.IntRange(1), default=None,
                 help="Wavelet decomposition levels [default: scikit-image's]."),
    click.option("--threshold", type=click.Choice(THRESHOLDS), default=_DEFAULTS.threshold, show_default=True,
                 help="BayesShrink or VisuShrink thresholds."),
    click.option("--wavelet-backend", type=click.Choice(WAVELET_BACKENDS), default=_DEFAULTS.wavelet_backend,
                 show_default=True,
                 help="torch (batched, any device; same output whatever the batch) or skimage (the reference)."),
    click.option("--fusion", type=click.Choice(FUSIONS), default=_DEFAULTS.fusion, show_default=True,
                 help="mask: inpainted in the boxes, denoised elsewhere; denoise-after: denoise the inpainted image."),
    click.option("--regions", type=click.Choice(REGION_METHODS), default=_DEFAULTS.regions, show_default=True,
                 help="Boxes around CAM peaks, random boxes of the same size and number, or none (ablations)."),
    click.option("--denoise/--no-denoise", default=_DEFAULTS.denoise, show_default=True,
                 help="Wavelet-denoise outside the boxes (--no-denoise: inpainting only, an ablation)."),
]

_FIELD_NAMES = [field.name for field in dataclasses.fields(CIIDefenceConfig)]


def defence_options(command):
    """Add every CIIDefence parameter as an option; the command gets ``config``."""

    @functools.wraps(command)
    def wrapper(**kwargs):
        context = click.get_current_context()
        values = {name: kwargs.pop(name) for name in _FIELD_NAMES}
        given = {name: value for name, value in values.items()
                 if context.get_parameter_source(name) is not ParameterSource.DEFAULT}
        try:
            config = dataclasses.replace(strength_config(kwargs.pop("strength")), **given)
        except ConfigError as error:
            raise CommandFailed(str(error), exit_code=2) from None
        return command(config=config, **kwargs)

    for option in reversed(_DEFENCE_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


_COMMON_OPTIONS = [
    click.option("--model", default=DEFAULT_MODEL, show_default=True, metavar="NAME",
                 callback=lambda context, parameter, value: _check_model(value),
                 help=f"Classifier to protect: {', '.join(MODEL_NAMES)} (torchvision's need --checkpoint or their "
                      f"file in torchvision's cache); or your own, package.module:factory returning a Classifier "
                      f"(docs/PLUGINS.md)."),
    click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
                 help="Weights for --model: a state dict (.pt/.pth, read with weights_only) or .safetensors."),
    click.option("--random-weights", is_flag=True, hidden=True,
                 help="Use random weights (for tests of the plumbing)."),
    click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True),
    click.option("--threads", type=THREADS, default=None,
                 help="CPU threads for torch [default: every CPU this process may use]; on a machine shared "
                      "with other heavy jobs, fewer threads than cores avoids a many-fold slowdown."),
    click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of every random draw."),
    click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
                 help="Refuse images with more pixels than this, in the file or in the classifier's view."),
]


def common_options(command):
    """Add the model, device, threads, seed and image-size options."""
    for option in reversed(_COMMON_OPTIONS):
        command = option(command)
    return command


_CLUSTER_OPTIONS = [
    click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                 help="Run the units on Ray: alone, start or join Ray on this machine; 'auto' joins the running "
                      "cluster; or a cluster address. Needs pip install 'ciidefence[ray]'."),
    click.option("--workers", type=click.IntRange(1), default=None,
                 help="With --ray: actors [default: one per --threads-per-worker CPUs of the cluster]."),
    click.option("--threads-per-worker", type=THREADS, default=1, show_default=True,
                 help="With --ray: torch threads (and Ray CPUs) per actor."),
    click.option("--ship-data", is_flag=True,
                 help="With --ray: the driver reads the images and ships them to the workers (for workers that do "
                      "not see --data)."),
]


def cluster_options(command):
    """Add --ray, --workers, --threads-per-worker and --ship-data."""
    for option in reversed(_CLUSTER_OPTIONS):
        command = option(command)
    return command


def parse_cluster(address: str | None, workers: int | None, threads_per_worker: int, ship_data: bool):
    """The --ray options as :class:`~ciidefence.evaluation.cluster.ClusterOptions`, or None to run here;
    refuses Ray-only options without --ray."""
    if address is None:
        if workers is not None or ship_data:
            raise CommandFailed("--workers and --ship-data need --ray", exit_code=2)
        return None
    try:
        import ray  # noqa: F401
    except ImportError:
        raise CommandFailed("--ray needs Ray: pip install 'ciidefence[ray]'", exit_code=2) from None
    from ..evaluation.cluster import ClusterOptions

    return ClusterOptions(address, workers, threads_per_worker, ship_data)


_RUN_OPTIONS = [
    click.option("--data", required=True, type=click.Path(file_okay=False),
                 help="Folder of images with labels.csv (file,class_index), or one subfolder per WordNet id."),
    click.option("--labels", type=click.Path(dir_okay=False), default=None,
                 help="Labels CSV with columns file,class_index [default: DATA/labels.csv]."),
    click.option("--model", "model_text", default=DEFAULT_MODEL, show_default=True,
                 help=f"Classifier to evaluate, or several, comma-separated (one table each): "
                      f"{', '.join(MODEL_NAMES)}; or your own, package.module:factory returning a Classifier "
                      f"(docs/PLUGINS.md)."),
    *_COMMON_OPTIONS[1:3],
    click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N images."),
    click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True,
                 help="Images per attack batch; 8 is fastest per image on a 2-core CPU."),
    click.option("--resolution", type=click.Choice(RESOLUTIONS), default="view", show_default=True,
                 help="view: attack and defend the classifier's 224 px view of each image (the paper's protocol); "
                      "full: each image at its own resolution, as `ciid purify` defends it, the attack "
                      "made through the classifier's resize (slower: images of one size are batched together); "
                      "full-then-view: the attack on the full image, the defence on its view, as `ciid classify` "
                      "defends it (gray-box and transfer only)."),
    click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False),
                 help="Run folder (created; never overwritten)."),
    click.option("--resume", is_flag=True, help="Continue the run in --out; finished batches are kept."),
    click.option("--retry-errors", is_flag=True,
                 help="With --resume: rerun the batches that recorded errors (a unit that failed, an image that "
                      "could not be read), and only those, replacing their rows."),
    click.option("--dry-run", is_flag=True, help="Print the plan and its estimated cost, write nothing."),
    click.option("--shard", "shard_text", default=None, metavar="I/N",
                 help="Evaluate every N-th image from the I-th (0-based) of the selected ones: the same images on "
                      "every machine."),
    *_CLUSTER_OPTIONS,
    *_COMMON_OPTIONS[3:],
]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/8"`` to ``(2, 8)``."""
    if text is None:
        return None
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        raise CommandFailed(f"--shard {text!r}: expected I/N, e.g. 0/4", exit_code=2) from None
    if not 0 <= shard[0] < shard[1]:
        raise CommandFailed(f"--shard {text!r}: needs 0 <= I < N", exit_code=2)
    return shard


def run_options(command):
    """Add the options of a run folder (evaluate and sweep): data, model, size, --out, --resume, --dry-run, ...

    The command gets ``models``, a tuple of known model names.
    """

    @functools.wraps(command)
    def wrapper(**kwargs):
        return command(models=_check_models(kwargs.pop("model_text")), **kwargs)

    for option in reversed(_RUN_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
