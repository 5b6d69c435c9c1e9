"""The attacks, all from the Adversarial Robustness Toolbox, with documented defaults."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class AttackSpec:
    """How to build one attack, and what it costs.

    Attributes
    ----------
    name : str
        Name used on the command line and in results.
    title : str
        Human-readable name for tables.
    norm : str
        ``"inf"`` or ``"2"``: the norm its ``eps`` bounds (or minimises).
    bounded : bool
        True when the attack takes an ``eps`` budget; False for minimum-norm
        attacks (DeepFool, Carlini-Wagner), run once, without ``eps``.
    iterative : bool
        More than one gradient step (for the sanity checks).
    defaults : dict
        Every tunable parameter and its default.
    build : callable
        ``build(estimator, eps, params, batch_size) -> ART attack``; ``eps`` is
        a float, or an array ``(B, 1, 1, 1)`` of one budget per image.
    gradients : callable
        ``gradients(params) -> float``: gradient evaluations per image, roughly,
        for cost estimates.
    fixed : dict
        Parameters stored with every result to say which implementation made
        it, each with why it cannot be changed.
    """

    name: str
    title: str
    norm: str
    bounded: bool
    iterative: bool
    defaults: dict
    build: Callable[..., Any]
    gradients: Callable[[dict], float]
    fixed: dict = field(default_factory=dict)


def _fgsm(norm):
    def build(estimator, eps, p, batch):
        from art.attacks.evasion import FastGradientMethod

        return FastGradientMethod(estimator, norm=norm, eps=eps, eps_step=eps, batch_size=batch)

    return build


def _bim_l2(estimator, eps, p, batch):
    """I-FGSM in L2: projected gradient steps of eps * step_ratio from the clean image, no random start."""
    from art.attacks.evasion import ProjectedGradientDescent

    return ProjectedGradientDescent(
        estimator, norm=2, eps=eps, eps_step=eps * p["step_ratio"], max_iter=p["max_iter"], num_random_init=0,
        batch_size=batch, verbose=False,
    )


def _bim(estimator, eps, p, batch):
    from art.attacks.evasion import BasicIterativeMethod

    return BasicIterativeMethod(
        estimator, eps=eps, eps_step=eps * p["step_ratio"], max_iter=p["max_iter"], batch_size=batch, verbose=False
    )


def _pgd(norm):
    """PGD (Madry et al. 2018): ``restarts`` random starts in the ball (0: from the clean image, which is I-FGSM)."""

    def build(estimator, eps, p, batch):
        from art.attacks.evasion import ProjectedGradientDescent

        def attack(budget):
            return ProjectedGradientDescent(
                estimator, norm=norm, eps=budget, eps_step=budget * p["step_ratio"], max_iter=p["max_iter"],
                num_random_init=p["restarts"], batch_size=batch, verbose=False,
            )

        if norm == 2 and p["restarts"] > 0 and not isinstance(eps, float | int):
            return _OneBudgetPerImage(attack, eps)
        return attack(eps)

    return build


def _image_by_image(attack_for, x, y=None):
    """``attack_for(i).generate`` on each image ``i`` of ``x`` alone, the results stacked again."""
    import numpy as np

    return np.concatenate([
        attack_for(i).generate(x[i : i + 1], y=None if y is None else y[i : i + 1]) for i in range(len(x))
    ])


class _OneImageAtATime:
    """Runs an ART attack image by image.

    ART's class gradients take one backward pass of the whole batch per
    distinct class in it, so attacks built on them (Carlini-Wagner, over each
    image's own classes) cost about batch-size times more per image in batches.
    """

    def __init__(self, attack) -> None:
        self.attack = attack

    def generate(self, x, y=None):
        return _image_by_image(lambda i: self.attack, x, y)


class _OneBudgetPerImage:
    """Runs an ART attack image by image, each with its own scalar budget.

    ART draws an L2 random start for a whole batch from one radius (its
    ``random_sphere`` refuses one radius per image), so PGD-L2 with a random
    start and per-image budgets (``--eps-nl2``) runs this way.
    """

    def __init__(self, attack, eps) -> None:
        self.attack = attack
        self.eps = eps

    def generate(self, x, y=None):
        import numpy as np

        budgets = np.broadcast_to(np.asarray(self.eps, dtype=float).reshape(-1), (len(x),))
        return _image_by_image(lambda i: self.attack(float(budgets[i])), x, y)


class _DeepFool:
    """ART's DeepFool, one image at a time, over each image's ``nb_grads`` most likely classes.

    ART 1.20's DeepFool, given fewer ``nb_grads`` than classes, subtracts the
    wrong logit: that of the class whose number is the predicted class's
    *position* in its subset of labels. Its steps then aim at the wrong
    boundary, or are zero when that class is in the subset (on Lite0 it did
    not fool 24 of the 500 sample images it had right, and left 4 of them
    unperturbed). Here ART sees an estimator with exactly
    the image's top ``nb_grads`` outputs (the subset it would pick) and takes
    its all-classes path, whose indexing is right.

    Images the estimator already gets wrong (prediction other than ``y``) are
    returned unchanged: they need no perturbation, and DeepFool, which moves
    away from the predicted class, would often move them into the true one.
    """

    def __init__(self, estimator, params: dict) -> None:
        self.estimator = estimator
        self.params = params

    def generate(self, x, y=None):
        import numpy as np
        from art.attacks.evasion import DeepFool

        from .estimators import restricted_estimator

        logits = self.estimator.predict(x, batch_size=1)
        adversarial = x.copy()
        for i in range(len(x)):
            if y is not None and logits[i].argmax() != y[i]:
                continue
            classes = np.argsort(-logits[i], kind="stable")[: self.params["nb_grads"]]
            attack = DeepFool(restricted_estimator(self.estimator, classes), max_iter=self.params["max_iter"],
                              epsilon=self.params["overshoot"], nb_grads=len(classes), batch_size=1, verbose=False)
            adversarial[i] = attack.generate(x[i : i + 1])[0]
        return adversarial


def _deepfool(estimator, eps, p, batch):
    return _DeepFool(estimator, p)


def _cw(estimator, eps, p, batch):
    from art.attacks.evasion import CarliniL2Method

    return _OneImageAtATime(CarliniL2Method(
        estimator, confidence=p["confidence"], learning_rate=p["learning_rate"],
        binary_search_steps=p["binary_search_steps"], max_iter=p["max_iter"],
        initial_const=p["initial_const"], max_halving=p["max_halving"], max_doubling=p["max_doubling"],
        batch_size=1, verbose=False,
    ))


def _apgd(loss_type):
    def build(estimator, eps, p, batch):
        from art.attacks.evasion import AutoProjectedGradientDescent

        from .estimators import with_eot

        attack = AutoProjectedGradientDescent(
            estimator, norm="inf", eps=eps, eps_step=eps * p["step_ratio"], max_iter=p["max_iter"],
            nb_random_init=p["restarts"], batch_size=batch, loss_type=loss_type, verbose=False,
        )
        eot_samples = getattr(estimator, "eot_samples", 1)
        if eot_samples > 1:  # APGD attacks a PyTorchClassifier of its own making, with its loss and without EOT
            attack._estimator = with_eot(attack.estimator, eot_samples)
        return attack

    return build


def _square(estimator, eps, p, batch):
    from art.attacks.evasion import SquareAttack

    return SquareAttack(
        estimator, norm="inf", eps=eps, max_iter=p["max_iter"], p_init=p["p_init"], nb_restarts=p["restarts"],
        batch_size=batch, verbose=False,
    )


_ITERATIVE = {"max_iter": 10, "step_ratio": 0.25}

ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("fgsm", "FGSM", "inf", True, False, {}, _fgsm("inf"), lambda p: 1),
        AttackSpec("fgsm-l2", "FGSM (L2)", "2", True, False, {}, _fgsm(2), lambda p: 1),
        AttackSpec("bim", "I-FGSM (BIM)", "inf", True, True, dict(_ITERATIVE), _bim, lambda p: p["max_iter"]),
        AttackSpec("pgd", "PGD (L-inf)", "inf", True, True, {**_ITERATIVE, "restarts": 1}, _pgd("inf"),
                   lambda p: p["max_iter"] * max(p["restarts"], 1)),
        AttackSpec("bim-l2", "I-FGSM (L2)", "2", True, True, dict(_ITERATIVE), _bim_l2, lambda p: p["max_iter"]),
        AttackSpec("pgd-l2", "PGD (L2)", "2", True, True, {**_ITERATIVE, "restarts": 1}, _pgd(2),
                   lambda p: p["max_iter"] * max(p["restarts"], 1)),
        AttackSpec("deepfool", "DeepFool", "2", False, True,
                   {"max_iter": 20, "overshoot": 0.02, "nb_grads": 10, "version": 2}, _deepfool,
                   lambda p: 6 * (p["nb_grads"] + 1),
                   fixed={"version": "version 1 was ART 1.20's DeepFool as it is, which aims at the wrong class "
                                     "boundary; only version 2 is built"}),
        AttackSpec("cw", "Carlini-Wagner L2", "2", False, True,
                   {"confidence": 0.0, "learning_rate": 0.01, "binary_search_steps": 2, "max_iter": 10,
                    "initial_const": 1.0, "max_halving": 2, "max_doubling": 2}, _cw,
                   lambda p: p["binary_search_steps"] * p["max_iter"]
                   * (1 + (p["max_halving"] + p["max_doubling"]) / 3)),
        AttackSpec("apgd-ce", "APGD-CE", "inf", True, True, {"max_iter": 20, "step_ratio": 2.0, "restarts": 1},
                   _apgd("cross_entropy"), lambda p: p["max_iter"] * p["restarts"]),
        AttackSpec("apgd-dlr", "APGD-DLR", "inf", True, True, {"max_iter": 20, "step_ratio": 2.0, "restarts": 1},
                   _apgd("difference_logits_ratio"), lambda p: p["max_iter"] * p["restarts"]),
        AttackSpec("square", "Square (score-based)", "inf", True, True,
                   {"max_iter": 100, "p_init": 0.8, "restarts": 1}, _square,
                   lambda p: p["max_iter"] * p["restarts"] / 3),
    )
}


def attack_spec(name: str) -> AttackSpec:
    """The spec of attack ``name``; :class:`ConfigError` for an unknown name."""
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; choose from: {', '.join(ATTACKS)}")
    return ATTACKS[name]


MAY_BE_ZERO = frozenset({"confidence", "overshoot", "max_halving", "max_doubling", "pgd.restarts",
                         "pgd-l2.restarts"})
"""Parameters that may be 0 (``ATTACK.KEY`` for one attack's: PGD without a random start is I-FGSM); every other
number must be positive. All must be finite, and ``p_init`` at most 1."""


def _check_range(name: str, key: str, value: float) -> None:
    zero_ok = key in MAY_BE_ZERO or f"{name}.{key}" in MAY_BE_ZERO
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0) and (key != "p_init" or value <= 1)):
        bound = "non-negative" if zero_ok else "positive"
        raise ConfigError(f"{name}.{key} must be a finite, {bound} number{' at most 1' if key == 'p_init' else ''}, "
                          f"got {value!r}")


def attack_params(name: str, overrides: dict[str, str | float] | None = None) -> dict:
    """The attack's parameters: its defaults with ``overrides`` applied, type- and range-checked (before any
    run folder is written: ART's own refusals would come only when the attack is built)."""
    spec = attack_spec(name)
    params = dict(spec.defaults)
    for key, value in (overrides or {}).items():
        if key not in params:
            known = ", ".join(params) or "none"
            raise ConfigError(f"attack {name} has no parameter {key!r} (parameters: {known})")
        if key in spec.fixed:
            raise ConfigError(f"{name}.{key} cannot be changed: {spec.fixed[key]}")
        kind = type(params[key])
        try:
            params[key] = kind(value) if kind is not int else int(str(value), 10)
        except ValueError:
            raise ConfigError(f"{name}.{key} must be a {kind.__name__}, got {value!r}") from None
        _check_range(name, key, params[key])
    return params


def parse_eps(text: str, upper: float = 1.0) -> float:
    """``"8/255"``, ``"0.03"`` or ``"1e-2"`` as a float in (0, upper].

    L-inf budgets lie in (0, 1] for images in [0, 1]; L2 budgets may exceed 1.

    Raises
    ------
    ConfigError
        If the text is not a number or a fraction, or lies outside (0, upper].
    """
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError, OverflowError):
        raise ConfigError(f"eps {text!r} is not a finite number or fraction like 8/255") from None
    if not 0 < value <= upper:
        raise ConfigError(f"eps {text!r} must lie in (0, {upper:g}]")
    return value


def format_eps(value: float | None) -> str:
    """``8/255`` when ``value`` is a whole number of 1/255 steps, else the float; ``-`` for None."""
    if value is None:
        return "-"
    if value == 1:
        return "1"
    steps = value * 255
    return f"{round(steps)}/255" if abs(steps - round(steps)) < 1e-9 else f"{value:g}"
