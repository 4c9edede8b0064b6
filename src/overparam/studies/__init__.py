"""Studies: one module per phenomenon, each registered in REGISTRY (name -> Study)."""

from overparam.studies.base import REGISTRY, Check, RunContext, Study, StudyResult, register

# Importing a study module registers it; the order here is the order of the tour.
from overparam.studies import double_descent  # noqa: E402,F401
from overparam.studies import epoch_double_descent, sample_double_descent, random_features  # noqa: E402,F401
from overparam.studies import hessian_spectrum, hessian_fluctuations, saddle_index  # noqa: E402,F401
from overparam.studies import ntk_spectrum  # noqa: E402,F401
from overparam.studies import am_capacity  # noqa: E402,F401
from overparam.studies import nonlinearity_information  # noqa: E402,F401
from overparam.studies import am_in_networks  # noqa: E402,F401
from overparam.studies import sparse_responses  # noqa: E402,F401
from overparam.studies import attractor_nets  # noqa: E402,F401
from overparam.studies import prune_redundancy  # noqa: E402,F401

__all__ = ["REGISTRY", "Check", "RunContext", "Study", "StudyResult", "register"]
