"""The attacker's figure: an image counts for a defence only if it survives every attack of a threat model."""

from ciidefence.evaluation.store import ResultRow
from ciidefence.evaluation.worst_case import worst_cases


def row(image, experiment, correct, threat="graybox", purpose="main", error=None, defence="jpeg"):
    return ResultRow(image, 1, "lite0", defence, "{}", f"{defence}-hash", experiment, purpose, experiment, "{}",
                     4 / 255, "4/255", threat, None, None, 1, 1, 2, 1 if correct else 2, 0.0, 0.0, 0.0, 0.0, error)


def test_an_image_counts_only_if_it_survives_every_attack_of_its_threat_model():
    rows = [row("a", "fgsm", True), row("a", "pgd", True),
            row("b", "fgsm", True), row("b", "pgd", False),
            row("c", "fgsm", True),                                   # never attacked by PGD: left out
            row("d", "fgsm", True), row("d", "pgd", True, error="unreadable"),  # an error: left out
            row("a", "sanity", False, purpose="sanity"),              # checks of the attack do not count
            row("a", "clean", False, threat="clean"),
            row("a", "bpda-pgd", False, threat="bpda"), row("b", "bpda-pgd", True, threat="bpda")]
    found = {(w.defence, w.group): w for w in worst_cases(rows)}
    graybox = found[("jpeg", "graybox")]
    assert (graybox.attacks, graybox.images, graybox.survived) == (2, 2, 1)  # a survives both; b falls to PGD
    adaptive = found[("jpeg", "adaptive")]
    assert (adaptive.attacks, adaptive.images, adaptive.survived) == (1, 2, 1)
    assert set(found) == {("jpeg", "graybox"), ("jpeg", "adaptive")}
    low, high = graybox.interval
    assert low < graybox.accuracy == 0.5 < high
