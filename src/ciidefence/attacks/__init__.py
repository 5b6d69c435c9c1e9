"""Attacks from the Adversarial Robustness Toolbox, behind one registry."""

from .registry import (
    ATTACKS,
    AttackSpec,
    attack_params,
    attack_spec,
    format_eps,
    parse_eps,
)

__all__ = ["ATTACKS", "AttackSpec", "attack_params", "attack_spec", "format_eps", "parse_eps"]
