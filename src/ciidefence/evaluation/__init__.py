"""Evaluating defences under attack: plans, the results database, runs and reports."""

from .data import LabelledImage, load_dataset
from .plan import THREATS, Experiment, RunConfig
from .runner import Evaluation, open_run
from .store import ResultRow, ResultStore
from .summary import sanity_checks, wilson_interval, write_report

__all__ = [
    "THREATS", "Evaluation", "Experiment", "LabelledImage", "ResultRow", "ResultStore", "RunConfig",
    "load_dataset", "open_run", "sanity_checks", "wilson_interval", "write_report",
]
