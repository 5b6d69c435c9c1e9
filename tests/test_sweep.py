"""The parameter sweep: grids, the Pareto front, the chosen point, and the command end to end."""

import json
import subprocess
import sys

import pytest

from ciidefence import CIIDefenceConfig
from ciidefence.errors import ConfigError
from ciidefence.evaluation.sweep import (
    Score,
    best_within,
    operating_points,
    pareto_front,
    parse_grid,
    parse_point,
    sweep_points,
)
from test_evaluation import data_dir  # noqa: F401  (the fixture)


def test_grid_values_take_each_parameter_type():
    grid = parse_grid(("top_k=1,3", "sigma=0.01", "wavelet=db1,db2", "denoise=false", "wavelet_levels=none,2"))
    assert grid == {"top_k": [1, 3], "sigma": [0.01], "wavelet": ["db1", "db2"], "denoise": [False],
                    "wavelet_levels": [None, 2]}
    for bad in ("top_k=x", "colour=1", "sigma=", "denoise=maybe"):
        with pytest.raises(ConfigError):
            parse_grid((bad,))


def test_points_are_the_grid_or_a_seeded_sample_of_it():
    grid = parse_grid(("top_k=1,2,3", "sigma=0.01,0.02"))
    base = CIIDefenceConfig(peaks=1)
    points = sweep_points(base, grid)
    assert len(points) == 6 and all(p["peaks"] == 1 for p in points)
    sample = sweep_points(base, grid, samples=3, seed=5)
    assert len(sample) == 3 and sample == sweep_points(base, grid, samples=3, seed=5)
    with pytest.raises(ConfigError):
        sweep_points(base, parse_grid(("sigma=-1",)))


def score(label, clean, robust, defence="ciid", **params):
    return Score(label, defence, params, clean, {"pgd": robust}, 1.0)


def test_pareto_front_and_the_best_point_within_two_points():
    points = [score("a", 0.88, 0.10), score("b", 0.86, 0.30), score("c", 0.80, 0.50), score("d", 0.79, 0.40),
              score("jpeg", 0.85, 0.35, "jpeg"), score("none", 0.88, 0.0, "none")]
    assert [p.label for p in pareto_front(points)] == ["c", "jpeg", "b", "a"]
    assert best_within(points, undefended_clean=0.88).label == "b"
    assert best_within(points, undefended_clean=0.95) is None


def test_sweep_command_scores_points_and_rivals_on_the_same_attacks(data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "ciidefence.cli.main", "sweep", "--data", str(data_dir), "--out", str(out),
               "--limit", "2", "--grid", "top_k=1,2", "--point", "regions=none", "--rivals", "jpeg",
               "--attacks", "fgsm"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "sweep.json").read_text())
    labels = [p["label"] for p in summary["points"]]
    assert "none" in labels and "jpeg" in labels and sum(label.startswith("ciid (") for label in labels) == 3
    assert "ciid (regions=none, top_k=3)" in labels  # points named by the settings that tell them apart
    assert summary["operating_points"] and all(p["regions"] == "cam" for p in summary["operating_points"].values())
    assert all(set(p["robust"]) == {"fgsm 2/255"} for p in summary["points"])
    assert (out / "pareto.png").stat().st_size > 0
    again = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr


def test_a_tie_in_robustness_up_to_rounding_is_dominated_by_higher_clean_accuracy():
    tied = Score("a", "ciid", {}, 0.870, {"fgsm": 0.166, "bim": 0.034}, 1.0)
    better = Score("b", "bit-depth", {}, 0.886, {"fgsm": 0.182, "bim": 0.018}, 1.0)
    assert [p.label for p in pareto_front([tied, better])] == ["b"]


def test_extra_points_follow_the_grid_and_take_one_value_each():
    base = CIIDefenceConfig()
    assert parse_point("regions=none sigma=0.04") == {"regions": "none", "sigma": 0.04}
    for bad in ("sigma=0.01,0.02", "", "colour=red", "top_k=x"):
        with pytest.raises(ConfigError):
            parse_point(bad)
    points = sweep_points(base, parse_grid(("sigma=0.01,0.02",)), extra=(parse_point("regions=random"),
                                                                          parse_point("sigma=0.02")))
    assert [(p["sigma"], p["regions"]) for p in points] == [(0.01, "cam"), (0.02, "cam"), (base.sigma, "random")]


def test_operating_points_follow_the_rule_and_skip_ablations():
    points = [score("none", 0.888, 0.05, "none"), score("a", 0.875, 0.20), score("b", 0.84, 0.40),
              score("c", 0.80, 0.47), score("d", 0.76, 0.50), score("e", 0.70, 0.55),
              score("denoise-only", 0.86, 0.60, regions="none"), score("inpaint-only", 0.88, 0.30, denoise=False),
              score("jpeg", 0.85, 0.70, "jpeg")]
    chosen = operating_points(points, undefended_clean=0.888)
    assert {name: p.label for name, p in chosen.items()} == {"light": "a", "balanced": "c", "strong": "d"}
    assert "light" not in operating_points(points, undefended_clean=0.95)


def test_points_alone_are_scored_without_the_base_configuration():
    base = CIIDefenceConfig()
    points = sweep_points(base, {}, extra=(parse_point("sigma=0.05"),))
    assert [p["sigma"] for p in points] == [0.05]
    assert sweep_points(base, {}) == [base.to_dict()]
