"""What an evaluation run does: its configuration and the experiments it expands to."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..attacks import attack_params, attack_spec, format_eps
from ..defences.bpda import APPROXIMATIONS
from ..defences.config import CIIDefenceConfig
from ..defences.registry import check_defence_name, defence_digest, defence_params, defence_spec
from ..errors import ConfigError
from ..images import DEFAULT_MAX_PIXELS
from .stored import StoredConfig

if TYPE_CHECKING:
    from ..defences.registry import Defence

THREATS = ("graybox", "bpda", "transfer")
"""Threat models a user chooses; the unattacked experiment has threat ``"clean"``. ``transfer`` needs a source model
(``RunConfig.transfer_from``)."""
PURPOSES = ("main", "sanity", "sweep", "convergence")
"""Why an experiment runs: the table asked for, the sanity checks, a parameter sweep, or the convergence check of a
BPDA attack (the same attack with other step and EOT counts)."""
CONVERGENCE_STEPS = (10, 20, 50)
CONVERGENCE_EOT = (1, 5, 20)
BUDGETS = ("absolute", "nl2")
PROTOCOLS = ("all", "paper")
"""Which images are scored: all of them, or (the paper's, after Pixel Deflection's) only those the undefended
classifier gets right."""
RESOLUTIONS = ("view", "full", "full-then-view")
"""Where attacks and defences work: on the classifier's ``S x S`` view (the paper's protocol, and the default); on
each image at its own resolution, as ``ciid purify`` defends it (the attack is made through the classifier's
differentiable resize to its view); or the attack on the full image and the defence on the view of the attacked
image, as ``ciid classify`` defends it (a deployment that resizes before it defends). Gray-box and transfer
threats only for the last: BPDA would need the resize inside the defence."""
SANITY_PGD = {"max_iter": 20, "step_ratio": 0.25, "restarts": 0}
SANITY_EPS = 8 / 255
UNBOUNDED_EPS = 1.0


def convergence_points(steps: int, eot: int, randomised: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The points of a BPDA attack's convergence check, its own included.

    Returns the step counts (each at ``eot`` samples): ``steps`` and
    :data:`CONVERGENCE_STEPS`; and the EOT sample counts (each at ``steps``
    steps): ``eot`` and :data:`CONVERGENCE_EOT` on a ``randomised`` target,
    none on a deterministic one.
    """
    return tuple(sorted({*CONVERGENCE_STEPS, steps})), tuple(sorted({*CONVERGENCE_EOT, eot})) if randomised else ()


def threat_label(threat: str, approximation: str | None, source: str | None) -> str:
    """How tables name a threat: ``bpda-<approximation>``, ``transfer-from-<source>``, or the threat itself."""
    if threat == "bpda":
        return f"bpda-{approximation}"
    if threat == "transfer":
        return f"transfer-from-{source}"
    return threat


@dataclass(frozen=True)
class Experiment:
    """One attack setting: every selected image is attacked once under it.

    Attributes
    ----------
    attack : str
        An attack of :data:`ciidefence.attacks.ATTACKS`, or ``"clean"`` (no attack).
    params : tuple
        The attack's full parameters as sorted ``(key, value)`` pairs.
    eps : float or None
        The budget; None for minimum-norm attacks and the clean experiment.
    threat : str
        ``"clean"``, ``"graybox"`` (the attacker attacks the bare classifier;
        every defence is scored on the result), ``"bpda"`` (the attacker
        attacks ``target`` itself, with the real defence forward and
        ``approximation`` backward) or ``"transfer"`` (the attacker attacks
        another bare classifier, ``source``; every defence of the evaluated
        classifier is scored on the result: the black-box number).
    approximation : str or None
        BPDA's backward approximation.
    target : str or None
        BPDA's attacked defence (its label in the run).
    purpose : str
        One of :data:`PURPOSES`.
    budget : str
        How ``eps`` is meant: ``"absolute"`` (a norm on images in [0, 1]) or
        ``"nl2"`` (normalised L2 dissimilarity: each image's L2 budget is
        ``eps`` times its own L2 norm, the paper's convention).
    eot : int
        Gradient samples averaged per attack step (EOT; BPDA on randomised defences).
    source : str or None
        The classifier a transfer attack is made on.
    """

    attack: str
    params: tuple = ()
    eps: float | None = None
    threat: str = "clean"
    approximation: str | None = None
    target: str | None = None
    purpose: str = "main"
    budget: str = "absolute"
    eot: int = 1
    source: str | None = None

    def __post_init__(self) -> None:
        if (self.threat == "transfer") != (self.source is not None):
            raise ConfigError("a transfer experiment, and only one, names its source model")
        if self.eot < 1:
            raise ConfigError(f"EOT samples must be positive, got {self.eot}")
        if self.budget not in BUDGETS:
            raise ConfigError(f"unknown budget {self.budget!r}; choose from: {', '.join(BUDGETS)}")
        if self.purpose not in PURPOSES or self.threat not in ("clean", *THREATS):
            raise ConfigError(f"bad experiment: purpose {self.purpose!r}, threat {self.threat!r}")
        if (self.threat == "bpda") != (self.approximation is not None and self.target is not None):
            raise ConfigError("a BPDA experiment, and only one, names its approximation and target")

    def identity(self) -> dict:
        """Every field, by name: what the experiment is, independent of how the dataclass prints.

        Fields added after 0.2 appear only when they differ from their
        defaults, so adding one changes no existing experiment's digest.
        """
        found = {"attack": self.attack, "params": dict(self.params), "eps": self.eps, "threat": self.threat,
                 "approximation": self.approximation, "target": self.target, "purpose": self.purpose}
        if self.budget != "absolute":
            found["budget"] = self.budget
        if self.eot != 1:
            found["eot"] = self.eot
        if self.source is not None:
            found["source"] = self.source
        return found

    @property
    def digest(self) -> str:
        """A stable hash of :meth:`identity`; the experiment's key in the results database and in seeds."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True, separators=(",", ":"))

    @property
    def eps_label(self) -> str:
        return f"{self.eps:g} nl2" if self.budget == "nl2" and self.eps is not None else format_eps(self.eps)

    @property
    def threat_label(self) -> str:
        """``"graybox"``, ``"clean"``, ``"bpda-<approximation>"`` or ``"transfer-from-<source>"`` for tables."""
        return threat_label(self.threat, self.approximation, self.source)

    def describe(self) -> str:
        if self.threat == "clean":
            return "clean"
        parts = [self.attack, f"eps {self.eps_label}" if self.eps is not None else "unbounded", self.threat_label]
        if self.target:
            parts.append(f"on {self.target}")
        if self.purpose == "convergence":
            parts.append(f"({dict(self.params).get('max_iter', 1)} steps, EOT {self.eot})")
        return " ".join(parts)


@dataclass(frozen=True)
class RunConfig(StoredConfig):
    """Everything that determines a run's results; a resumed run must match it.

    ``defences`` are names from :data:`ciidefence.defences.DEFENCES` or plug-ins'
    import paths (:mod:`ciidefence.defences.plugins`); CIIDefence
    and its ablations start from the configuration ``ciid``. ``eot_samples``
    applies to BPDA attacks on randomised defences (for the others every
    sample is the same). ``sweep`` holds further CIIDefence configurations,
    each scored as a defence named ``ciid`` with its own hash. ``data`` and
    ``labels`` are the paths as given; ``data_digest`` says what they hold
    (:func:`~ciidefence.evaluation.data.dataset_digest`), and a resumed run is
    checked by it, not by the paths, so the data may move. ``model`` is
    the classifier; ``extra_models`` are further ones evaluated with the same
    plan into the same run folder (one table each; :attr:`models` lists all).
    ``eval_draws`` is how often a randomised defence scores each image, each
    time with its own draws (the worst case and the majority vote over them
    are reported beside the first draw's figure). ``resolution`` is one of
    :data:`RESOLUTIONS`; at ``"full"``, a batch's images of one size are
    attacked together, and L2 budgets in absolute units spread over more
    pixels than at the view (``nl2`` budgets scale with each image).
    """

    data: str
    labels: str | None
    model: str
    checkpoint: str | None
    random_weights: bool
    defences: tuple[str, ...]
    ciid: dict
    attacks: tuple[str, ...]
    attack_overrides: dict = field(default_factory=dict)
    eps: tuple[float, ...] = (2 / 255, 4 / 255)
    eps_l2: tuple[float, ...] = (0.5, 1.0)
    eps_nl2: tuple[float, ...] = ()
    threats: tuple[str, ...] = ("graybox",)
    approximations: tuple[str, ...] = APPROXIMATIONS
    bpda_attacks: tuple[str, ...] | None = None
    bpda_eps: tuple[float, ...] | None = None
    eot_samples: int = 1
    limit: int | None = None
    batch_size: int = 8
    seed: int = 0
    sanity: bool = True
    sweep: tuple[dict, ...] = ()
    max_pixels: int = DEFAULT_MAX_PIXELS
    protocol: str = "all"
    convergence: bool = False
    extra_models: tuple[str, ...] = ()
    transfer_from: tuple[str, ...] = ()
    shard: tuple[int, int] | None = None
    eval_draws: int = 10
    data_digest: str | None = None
    resolution: str = "view"

    def __post_init__(self) -> None:
        if self.checkpoint is not None and self.extra_models:
            raise ConfigError("--checkpoint names the weights of one model: give one --model with it")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"a model is named twice: {', '.join(self.models)}")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ConfigError(f"--shard I/N needs 0 <= I < N, got {self.shard[0]}/{self.shard[1]}")
        if ("transfer" in self.threats) != bool(self.transfer_from):
            raise ConfigError("the transfer threat needs --transfer-from (the model the attacks are made on), "
                              "and --transfer-from needs --threat transfer")
        for name in self.defences:
            check_defence_name(name)
        for point in self.sweep:
            CIIDefenceConfig(**point)
        for name in self.threats:
            if name not in THREATS:
                raise ConfigError(f"unknown threat model {name!r}; choose from: {', '.join(THREATS)}")
        for name in self.approximations:
            if name not in APPROXIMATIONS:
                raise ConfigError(f"unknown BPDA approximation {name!r}; choose from: {', '.join(APPROXIMATIONS)}")
        for name in self.attacks:
            attack_params(name, self.attack_overrides.get(name))
        for name in self.bpda_attacks or ():
            if name not in self.attacks:
                raise ConfigError(f"--bpda-attacks names {name!r}, which is not among --attacks")
        for name in self.attack_overrides:
            if name not in self.attacks:
                raise ConfigError(f"parameters given for {name!r}, which is not among --attacks")
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(f"unknown resolution {self.resolution!r}; choose from: {', '.join(RESOLUTIONS)}")
        if self.resolution == "full-then-view" and "bpda" in self.threats:
            raise ConfigError("--resolution full-then-view takes gray-box and transfer threats, not bpda (the "
                              "attacker would have to differentiate the resize before the defence)")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; choose from: {', '.join(PROTOCOLS)}")
        if not self.defences or not self.attacks and not self.sanity:
            raise ConfigError("nothing to evaluate: give at least one defence and one attack")
        if self.batch_size < 1 or self.eot_samples < 1 or (self.limit is not None and self.limit < 1):
            raise ConfigError("--batch-size, --eot and --limit must be positive")
        if not 1 <= self.eval_draws <= 1000:
            raise ConfigError(f"--eval-draws must lie in 1..1000, got {self.eval_draws}")

    @classmethod
    def from_stored(cls, stored: dict) -> RunConfig:
        """The configuration a run folder stores (its ``config.json``, or the database's copy), as it was run:
        JSON's lists read back as tuples; options added since take their defaults.

        Raises :class:`ConfigError` for options this version does not know, or values it refuses."""
        unknown = set(stored) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"the stored configuration has options this version does not know: "
                              f"{', '.join(sorted(unknown))}")
        values: dict = {key: tuple(value) if isinstance(value, list) else value for key, value in stored.items()}
        return cls(**values)

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model, *self.extra_models)

    @property
    def ciid_config(self) -> CIIDefenceConfig:
        return CIIDefenceConfig(**self.ciid)

    @property
    def purpose(self) -> str:
        """The purpose of the run's own experiments: ``"sweep"`` when it scores sweep points, else ``"main"``."""
        return "sweep" if self.sweep else "main"

    def named_defences(self) -> list[tuple[str, str, dict]]:
        """(label, name, full parameters) of the defences asked for by name; the label is the name."""
        return [(name, name, defence_params(name, self.ciid_config)) for name in self.defences]

    def sweep_defences(self) -> list[tuple[str, str, dict]]:
        """(label, name, full parameters) of the sweep's points, all CIIDefence, labelled ``ciid@<digest>``."""
        entries = []
        for point in self.sweep:
            params = CIIDefenceConfig(**point).to_dict()
            entries.append((f"ciid@{defence_digest('ciid', params)}", "ciid", params))
        return entries

    def clean_experiment(self) -> Experiment:
        """The unattacked experiment; every defence's clean prediction is drawn under its identity."""
        return Experiment("clean", purpose=self.purpose)

    def traits(self, name: str, defences: Mapping[str, Defence] | None = None) -> tuple[bool, tuple[str, ...]]:
        """Whether defence ``name`` is randomised, and its BPDA approximations: from the built ``defences``
        where given (a plug-in is known only once built), else from the registry."""
        if defences is not None and name in defences:
            return defences[name].randomised, defences[name].approximations
        spec = defence_spec(name)
        return spec.randomised, spec.approximations(defence_params(name, self.ciid_config))

    def convergence_variants(self, experiment: Experiment, defences: Mapping[str, Defence] | None = None
                             ) -> list[Experiment]:
        """A BPDA experiment's convergence check: its attack with :data:`CONVERGENCE_STEPS` steps and, on a
        randomised target, with :data:`CONVERGENCE_EOT` samples (at its own step count)."""
        params = dict(experiment.params)
        if experiment.threat != "bpda" or "max_iter" not in params or experiment.target is None:
            return []
        steps_points, eot_points = convergence_points(params["max_iter"], experiment.eot,
                                                      self.traits(experiment.target, defences)[0])
        variants = [dataclasses.replace(experiment, params=tuple(sorted({**params, "max_iter": steps}.items())),
                                        purpose="convergence") for steps in steps_points]
        variants += [dataclasses.replace(experiment, eot=eot, purpose="convergence") for eot in eot_points]
        own = dataclasses.replace(experiment, purpose="convergence")
        return [variant for variant in variants if variant != own]

    def select(self, images: list) -> list:
        """The images this run evaluates: the first ``limit`` of the sorted data, then every N-th from I (``shard``).

        The same data and options pick the same images on every machine.
        """
        chosen = images[: self.limit]
        if self.shard is not None:
            index, count = self.shard
            chosen = chosen[index::count]
        return chosen

    def budgets(self, norm: str) -> list[tuple[float, str]]:
        """(eps, budget kind) of a bounded attack in ``norm``: L-inf budgets, or absolute and normalised L2 ones."""
        if norm == "inf":
            return [(eps, "absolute") for eps in self.eps]
        return [(eps, "absolute") for eps in self.eps_l2] + [(eps, "nl2") for eps in self.eps_nl2]

    def experiments(self, defences: Mapping[str, Defence] | None = None) -> list[Experiment]:
        """The experiments of this run, cheapest first; ``defences`` (by label) are the built ones, which a
        plan with plug-in defences needs (see :meth:`traits`)."""
        purpose = self.purpose
        found = [self.clean_experiment()]
        for name in self.attacks:
            spec = attack_spec(name)
            params = tuple(sorted(attack_params(name, self.attack_overrides.get(name)).items()))
            budgets = self.budgets(spec.norm) if spec.bounded else [(None, "absolute")]
            for eps, budget in budgets:
                if "graybox" in self.threats:
                    found.append(Experiment(name, params, eps, "graybox", purpose=purpose, budget=budget))
                if "transfer" in self.threats:
                    found += [Experiment(name, params, eps, "transfer", purpose=purpose, budget=budget, source=source)
                              for source in self.transfer_from]
                if ("bpda" in self.threats and (self.bpda_attacks is None or name in self.bpda_attacks)
                        and (self.bpda_eps is None or eps is None or eps in self.bpda_eps)):
                    for defence in self.defences:
                        if defence == "none":
                            continue  # BPDA on the bare model is the gray-box attack
                        randomised, approximations = self.traits(defence, defences)
                        for approximation in self.approximations:
                            if approximation not in approximations:
                                continue
                            eot = self.eot_samples if randomised else 1
                            found.append(Experiment(name, params, eps, "bpda", approximation, defence, purpose,
                                                    budget, eot))
        if self.convergence:
            found += [variant for experiment in found for variant in self.convergence_variants(experiment, defences)]
        if self.sanity:
            sanity = tuple(sorted(SANITY_PGD.items()))
            found.append(Experiment("pgd", sanity, SANITY_EPS, "graybox", purpose="sanity"))
            found.append(Experiment("pgd", sanity, UNBOUNDED_EPS, "graybox", purpose="sanity"))
        unique = list(dict.fromkeys(found))
        return sorted(unique, key=lambda e: (e.threat != "clean", e.purpose == "sanity", e.threat == "bpda"))
