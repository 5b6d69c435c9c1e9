"""The evaluation harness from Python: :func:`evaluate` runs what ``ciid evaluate`` runs, :func:`read_results` reads
a run folder back as typed rows.

>>> import ciidefence as cii
>>> rows = cii.evaluate(data="samples", defences=["none", "ciid", "mymodule:make_defence"], attacks=["pgd"],
...                     eps=["4/255"], threat=["graybox", "bpda"], out="runs/mine", limit=4)
>>> robust = [row for row in rows if row.attack == "pgd" and row.defence == "ciid"]
>>> sum(row.correct for row in robust) / len(robust)

docs/PLUGINS.md has the worked example.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..attacks import parse_eps
from ..defences.bpda import APPROXIMATIONS
from ..defences.config import CIIDefenceConfig
from ..errors import ConfigError
from ..progress import ProgressBar
from .plan import RunConfig
from .run_folder import open_run
from .runner import Evaluation
from .store import ResultRow, ResultStore


@dataclass(frozen=True)
class RunOutcome:
    """What :func:`run_evaluation` did: units rerun for ``retry_errors``, and images with errors at the end."""

    retried: int
    failed: int


def run_evaluation(evaluations: list[Evaluation], run_dir: str | Path, resume: bool = False, cluster=None,
                   retry_errors: bool = False, progress: Callable[[int], ProgressBar] | None = None,
                   on_retry: Callable[[int], None] | None = None) -> RunOutcome:
    """Run every pending unit of ``evaluations`` (one per model of one configuration, built and so checked) into
    ``run_dir``, here or on Ray with ``cluster`` (:class:`~ciidefence.evaluation.cluster.ClusterOptions`).

    With ``resume``, a run whose defences changed since its rows were
    written is refused; ``retry_errors`` first reruns the units that recorded
    errors (``on_retry(units)`` hears how many, before they run).
    ``progress(total_units)`` makes the bar.
    """
    config, device = evaluations[0].config, evaluations[0].device
    if cluster is not None:
        from .cluster import connect

        connect(cluster.address)  # an unreachable cluster stops here, before the run folder exists
    with open_run(run_dir, config, resume) as store:
        for evaluation in evaluations:
            evaluation.check_resumable(store)
        retried = sum(evaluation.forget_failed(store) for evaluation in evaluations) if retry_errors else 0
        if retry_errors and on_retry is not None:
            on_retry(retried)
        if cluster is not None:
            from .cluster import run_on_ray

            run_on_ray(evaluations, store, cluster, str(device), progress=progress)
        else:
            total = sum(len(evaluation.units()) for evaluation in evaluations)
            for evaluation in evaluations:
                evaluation.run(store, total)
        return RunOutcome(retried, sum(len(store.failed(model)) for model in config.models))


def evaluate(data: str | Path, out: str | Path, defences: Sequence[str] = ("none", "ciid"),
             attacks: Sequence[str] = ("fgsm", "pgd"), eps: Iterable[float | str] = ("2/255", "4/255"),
             threat: Sequence[str] = ("graybox",), *, model: str = "efficientnet_lite0", labels: str | None = None,
             eps_l2: Iterable[float | str] = (0.5, 1.0), approximations: Sequence[str] = APPROXIMATIONS,
             eot: int = 1, eval_draws: int = 10, attack_params: dict[str, dict] | None = None,
             ciid: CIIDefenceConfig | None = None, limit: int | None = None, batch_size: int = 8,
             resolution: str = "view", seed: int = 0,
             sanity: bool = False, convergence: bool = False, resume: bool = False, report: bool = True,
             progress: Callable[[int], ProgressBar] | None = None) -> list[ResultRow]:
    """Evaluate defences under attacks, as ``ciid evaluate`` does, and return the run's rows.

    Parameters
    ----------
    data : path
        A folder of images with ``labels.csv`` (``file,class_index``), or one subfolder per WordNet id.
    out : path
        The run folder (created; with ``resume``, continued). It holds
        ``results.sqlite`` and, with ``report``, ``summary.md`` and the figures.
    defences : sequence of str
        Registry names (``ciid.defences.DEFENCES``) or plug-ins' import paths ``package.module:factory``
        (:mod:`ciidefence.defences.plugins`).
    attacks : sequence of str
        Names of ``ciidefence.attacks.ATTACKS``.
    eps, eps_l2 : iterable of float or str
        L-inf and L2 budgets for images in [0, 1] (``"4/255"`` or ``0.0157``).
    threat : sequence of str
        ``"graybox"`` (the attacker ignores the defence), ``"bpda"`` (it
        attacks each defence through ``approximations``, with ``eot`` samples
        on randomised ones).
    eval_draws : int
        How often a randomised defence scores each image (worst case and majority vote over them).
    attack_params : dict, optional
        Per attack, parameters to change, e.g. ``{"pgd": {"max_iter": 10}}``.
    ciid : CIIDefenceConfig, optional
        The configuration CIIDefence and its ablations start from (default: ``balanced``).
    resolution : str
        ``"view"`` (the classifier's 224 px view, the paper's protocol) or ``"full"`` (each image at its own
        resolution, as ``ciid classify`` defends it; :data:`~ciidefence.evaluation.plan.RESOLUTIONS`).
    sanity, convergence : bool
        Add the sanity checks (off by default here: they attack the bare
        model at two more budgets) and BPDA's convergence check.
    progress : callable, optional
        ``progress(total_units)`` returning a bar (``update``, ``set_postfix_str``, ``close``); default none.

    Returns
    -------
    list of ResultRow
        Every row of the run, as :func:`read_results` gives them.
    """
    overrides = {name: {key: str(value) for key, value in params.items()}
                 for name, params in (attack_params or {}).items()}
    config = RunConfig(
        data=str(data), labels=labels, model=model, checkpoint=None, random_weights=False,
        defences=tuple(defences), ciid=(ciid or CIIDefenceConfig()).to_dict(), attacks=tuple(attacks),
        attack_overrides=overrides, eps=tuple(_budget(value, 1.0) for value in eps),
        eps_l2=tuple(_budget(value, float("inf")) for value in eps_l2), threats=tuple(threat),
        approximations=tuple(approximations), eot_samples=eot, eval_draws=eval_draws, limit=limit,
        batch_size=batch_size, seed=seed, sanity=sanity, convergence=convergence, resolution=resolution)
    run_evaluation([Evaluation(config, torch.device("cpu"), progress=progress, model=name) for name in config.models],
                   out, resume=resume)
    if report:
        from .summary import write_report

        write_report(out)
    return read_results(out)


def read_results(run_dir: str | Path) -> list[ResultRow]:
    """Every result row of a run folder, typed, in the order written.

    Raises :class:`ConfigError` when ``run_dir`` holds no ``results.sqlite``.
    """
    path = Path(run_dir) / "results.sqlite"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no results.sqlite here")
    with ResultStore(path) as store:
        return store.result_rows()


def _budget(value: float | str, upper: float) -> float:
    return parse_eps(value if isinstance(value, str) else repr(float(value)), upper=upper)
