"""The attack registry's own wrappers around ART, on the real model and real images."""

from __future__ import annotations

import numpy as np
import pytest

from ciidefence import load_image
from ciidefence.attacks import attack_params, attack_spec
from ciidefence.attacks.estimators import art_estimator, restricted_estimator
from ciidefence.errors import ConfigError
from ciidefence.randomness import global_seed
from conftest import BUNDLED_SAMPLE, TEST_DATA

# Lite0 gets it right with two close classes (logits 8.9 and 8.3); ART 1.20's
# own DeepFool (nb_grads=10) returns it unperturbed.
ALLIGATOR = ("n01698640_American_alligator.JPEG", 50)
TENCH = ("n01440764_tench.JPEG", 0)


@pytest.fixture(scope="module")
def estimator(classifier):
    return art_estimator(classifier)


def view(classifier, name: str) -> np.ndarray:
    folder = BUNDLED_SAMPLE if (BUNDLED_SAMPLE / name).is_file() else TEST_DATA
    return classifier.prepare(load_image(folder / name, view_side=classifier.view_side)[None]).numpy()


def test_restricted_estimator_returns_the_chosen_outputs_and_their_gradients(classifier, estimator):
    x = view(classifier, ALLIGATOR[0])
    classes = np.array([49, 50, 6])
    restricted = restricted_estimator(estimator, classes)
    assert restricted.nb_classes == 3
    np.testing.assert_allclose(restricted.predict(x), estimator.predict(x)[:, classes], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(restricted.class_gradient(x, label=2), estimator.class_gradient(x, label=6),
                               rtol=1e-4, atol=1e-6)


def test_deepfool_fools_an_image_with_a_close_second_class_by_a_small_step(classifier, estimator):
    x = view(classifier, ALLIGATOR[0])
    assert estimator.predict(x).argmax() == ALLIGATOR[1]
    attack = attack_spec("deepfool").build(estimator, None, attack_params("deepfool"), 1)
    adversarial = attack.generate(x, y=np.array([ALLIGATOR[1]]))
    assert estimator.predict(adversarial).argmax() != ALLIGATOR[1]
    assert 0 < np.linalg.norm(adversarial - x) / np.linalg.norm(x) < 0.005
    assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_deepfool_leaves_an_already_misclassified_image_unchanged(classifier, estimator):
    x = view(classifier, ALLIGATOR[0])
    wrong_label = np.array([ALLIGATOR[1] + 1])
    attack = attack_spec("deepfool").build(estimator, None, attack_params("deepfool"), 1)
    np.testing.assert_array_equal(attack.generate(x, y=wrong_label), x)


def test_an_attacks_implementation_version_cannot_be_overridden():
    assert attack_params("deepfool")["version"] == 2
    with pytest.raises(ConfigError, match="deepfool.version cannot be changed"):
        attack_params("deepfool", {"version": "1"})


def attack_once(estimator, name, x, y, eps, **params):
    attack = attack_spec(name).build(estimator, eps, attack_params(name, {k: str(v) for k, v in params.items()}), 2)
    with global_seed(7):
        return attack.generate(x, y=y)


def test_pgd_starts_at_a_seeded_random_point_and_without_restarts_is_i_fgsm(classifier, estimator):
    x, y = view(classifier, TENCH[0]), np.array([TENCH[1]])
    i_fgsm = attack_once(estimator, "bim", x, y, 2 / 255)
    np.testing.assert_allclose(attack_once(estimator, "pgd", x, y, 2 / 255, restarts=0), i_fgsm, atol=1e-6)
    pgd = attack_once(estimator, "pgd", x, y, 2 / 255)
    assert np.abs(pgd - i_fgsm).max() > 1 / 255
    np.testing.assert_array_equal(attack_once(estimator, "pgd", x, y, 2 / 255), pgd)
    assert np.abs(pgd - x).max() <= 2 / 255 + 1e-6


def test_pgd_l2_with_a_random_start_keeps_each_images_own_budget(classifier, estimator):
    x = np.concatenate([view(classifier, TENCH[0]), view(classifier, ALLIGATOR[0])])
    y = np.array([TENCH[1], ALLIGATOR[1]])
    budgets = np.array([0.01, 0.03]) * np.linalg.norm(x.reshape(2, -1), axis=1)
    adversarial = attack_once(estimator, "pgd-l2", x, y, budgets.reshape(-1, 1, 1, 1))
    norms = np.linalg.norm((adversarial - x).reshape(2, -1), axis=1)
    assert np.all(norms <= budgets * 1.001) and np.all(norms >= budgets * 0.5)
    assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_the_private_parts_of_art_in_use_are_still_there():
    import art

    from ciidefence.attacks.art_contract import missing_private_attributes

    missing = missing_private_attributes()
    assert not missing, (f"ART {art.__version__} no longer has {', '.join(missing)}: ciidefence reaches into these "
                         f"(see ciidefence/attacks/art_contract.py); adapt their users, then widen the ART bound "
                         f"in pyproject.toml")


def test_the_art_guard_reports_an_attribute_that_moved(monkeypatch):
    from ciidefence.attacks import art_contract

    moved = {**art_contract.PRIVATE_ATTRIBUTES, "art.defences.preprocessor.TotalVarMin": ("_minimize", "_gone")}
    monkeypatch.setattr(art_contract, "PRIVATE_ATTRIBUTES", moved)
    assert art_contract.missing_private_attributes() == ["art.defences.preprocessor.TotalVarMin._gone"]
