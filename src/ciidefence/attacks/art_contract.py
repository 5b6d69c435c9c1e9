"""The private parts of ART this project reaches into, named in one place and checked.

ART has no public way to carry EOT into the estimator APGD builds for itself
(:func:`~ciidefence.attacks.estimators.with_eot` copies its loss and label
flags, and APGD's ``_estimator`` is replaced), nor to run TotalVarMin on a
mask drawn from our seeded generator (``_minimize``). pyproject.toml bounds
ART to the releases the tests cover; :func:`missing_private_attributes` says
what moved when a new release breaks that contract.
"""

from __future__ import annotations

PRIVATE_ATTRIBUTES = {
    "art.estimators.classification.PyTorchClassifier": ("_loss", "_reduce_labels", "_int_labels",
                                                        "_probability_labels"),
    "art.attacks.evasion.AutoProjectedGradientDescent": ("_estimator",),
    "art.defences.preprocessor.TotalVarMin": ("_minimize",),
}
"""For each ART class: the private attributes our code reads or replaces on its instances."""


def missing_private_attributes() -> list[str]:
    """``class.attribute`` of each private attribute the installed ART no longer has (empty when all are there)."""
    import torch
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.defences.preprocessor import TotalVarMin
    from art.estimators.classification import PyTorchClassifier

    estimator = PyTorchClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)),
                                  torch.nn.CrossEntropyLoss(), (3, 2, 2), 3, clip_values=(0.0, 1.0))
    instances = {
        "art.estimators.classification.PyTorchClassifier": estimator,
        "art.attacks.evasion.AutoProjectedGradientDescent": AutoProjectedGradientDescent(
            estimator, norm="inf", eps=0.1, eps_step=0.05, max_iter=1, nb_random_init=1, verbose=False),
        "art.defences.preprocessor.TotalVarMin": TotalVarMin(clip_values=(0.0, 1.0)),
    }
    return [f"{name}.{attribute}" for name, attributes in PRIVATE_ATTRIBUTES.items()
            for attribute in attributes if not hasattr(instances[name], attribute)]
