"""Studies: one module per phenomenon, each registered in REGISTRY (name -> Study)."""

from overparam.studies.base import REGISTRY, Check, RunContext, Study, StudyResult, register

# Importing a study module registers it; the order here is the order of the tour.
from overparam.studies import double_descent  # noqa: E402,F401

__all__ = ["REGISTRY", "Check", "RunContext", "Study", "StudyResult", "register"]
