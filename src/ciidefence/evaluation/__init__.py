"""Evaluating defences under attack: plans, the results database, runs and reports."""

from .._lazy import lazy_exports

_EXPORTS = {
    "LabelledImage": ".data",
    "load_dataset": ".data",
    "PURPOSES": ".plan",
    "THREATS": ".plan",
    "Experiment": ".plan",
    "RunConfig": ".plan",
    "Evaluation": ".runner",
    "open_run": ".run_folder",
    "ResultRow": ".store",
    "ResultStore": ".store",
    "read_run": ".run_folder",
    "sanity_checks": ".checks",
    "wilson_interval": ".intervals",
    "write_report": ".summary",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
