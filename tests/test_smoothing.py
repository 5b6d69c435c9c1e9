"""Randomized smoothing: the certificate's statistics, abstains, and the deployable smoothed classifier."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import binom, norm

from ciidefence.errors import ConfigError
from ciidefence.smoothing import ABSTAIN, SmoothedClassifier, certify, clopper_pearson_lower, predict


def constant(label: int, classes: int = 10):
    """A base classifier that always answers ``label``."""
    return lambda noisy: torch.nn.functional.one_hot(torch.full((len(noisy),), label), classes).float()


def coin(view: torch.Tensor):
    """A base classifier whose answer is the sign of the noise's mean: the votes split about evenly."""
    return lambda noisy: torch.stack([(noisy - view).mean((1, 2, 3)) > 0, (noisy - view).mean((1, 2, 3)) <= 0],
                                     1).float()


def test_the_lower_bound_is_the_hand_computed_clopper_pearson_value():
    # every draw right: the bound solves p ** n = alpha
    assert clopper_pearson_lower(1000, 1000, 0.001) == pytest.approx(0.001 ** (1 / 1000), rel=1e-9)
    # otherwise it solves P(X >= k | n, p) = alpha for the binomial X, found here by root finding on the tail
    tail = brentq(lambda p: binom.sf(989, 1000, p) - 0.001, 0.5, 1 - 1e-12, xtol=1e-14)
    assert clopper_pearson_lower(990, 1000, 0.001) == pytest.approx(tail, rel=1e-9)
    assert clopper_pearson_lower(0, 1000, 0.001) == 0.0


def test_certify_gives_the_radius_of_its_bound_and_2_46_sigma_at_most_with_n_1000():
    view = torch.rand(3, 8, 8)
    certificate = certify(constant(3), view, 0.25, 100, 1000, 0.001, 128, torch.Generator().manual_seed(0))
    assert certificate.prediction == certificate.top_class == 3 and certificate.count == 1000
    assert certificate.radius == pytest.approx(0.25 * norm.ppf(0.001 ** (1 / 1000)), rel=1e-9)
    assert certificate.radius == pytest.approx(0.25 * 2.4617, abs=1e-3)


def test_certify_and_predict_abstain_where_the_votes_split():
    view = torch.full((3, 8, 8), 0.5)
    certificate = certify(coin(view), view, 0.25, 100, 1000, 0.001, 100, torch.Generator().manual_seed(1))
    assert certificate.abstained and certificate.radius == 0.0 and certificate.p_lower <= 0.5
    assert 400 < certificate.count < 600
    assert predict(coin(view), view, 0.25, 1000, 0.001, 100, torch.Generator().manual_seed(2)) == ABSTAIN
    assert predict(constant(7), view, 0.25, 1000, 0.001, 100, torch.Generator().manual_seed(2)) == 7


def test_the_draws_depend_only_on_the_generator_not_the_batch_size():
    view = torch.rand(3, 8, 8)
    answers = [certify(coin(view), view, 0.5, 10, 101, 0.001, size, torch.Generator().manual_seed(5)).count
               for size in (1, 7, 101)]
    assert answers[0] == answers[1] == answers[2]


@pytest.mark.parametrize("sigma,n0,n,alpha", [(0, 100, 1000, 0.001), (math.inf, 1, 1, 0.1), (0.25, 0, 10, 0.01),
                                              (0.25, 10, 10, 0.5)])
def test_bad_smoothing_parameters_are_refused(sigma, n0, n, alpha):
    with pytest.raises(ConfigError):
        certify(constant(0), torch.rand(3, 4, 4), sigma, n0, n, alpha, 10, torch.Generator())


def test_the_smoothed_classifier_answers_each_image_the_same_way_alone_or_in_a_batch(classifier, photo):
    smoothed = SmoothedClassifier(classifier, 0.12, n0=8, n=32, alpha=0.01, batch_size=16)
    views = torch.cat([classifier.prepare(photo), classifier.prepare(photo.flip(-1))])
    together = smoothed(views)
    alone = [smoothed(view[None]) for view in views]
    assert together.classes.tolist() == [a.classes.item() for a in alone]
    assert together.radii.tolist() == [a.radii.item() for a in alone]
    assert together.certificates[0].count == alone[0].certificates[0].count
    assert together.classes.shape == (2,) and together.radii.dtype == torch.float64
