"""Studies: one module per phenomenon, each registered in REGISTRY (name -> Study)."""

from overparam.studies.base import REGISTRY, Check, RunContext, Study, StudyResult, register

# Importing a study module registers it; the order here is the order of the tour.
# Double descent and the population studies
from overparam.studies import double_descent  # noqa: E402,F401
from overparam.studies import epoch_double_descent, sample_double_descent, random_features  # noqa: E402,F401
# Memorization, curvature and the geometry of solutions
from overparam.studies import memorization, gd_vs_sgd  # noqa: E402,F401
from overparam.studies import hessian_spectrum, hessian_fluctuations, saddle_index  # noqa: E402,F401
from overparam.studies import batch_size, generalization_measures  # noqa: E402,F401
# Kernels
from overparam.studies import ntk_spectrum  # noqa: E402,F401
# Lottery tickets or escape dimensions
from overparam.studies import lottery_ticket, ticket_perturbation  # noqa: E402,F401
from overparam.studies import decision_regions, spawn_vs_slide, escape_width  # noqa: E402,F401
# Associative memory
from overparam.studies import am_capacity  # noqa: E402,F401
from overparam.studies import nonlinearity_information  # noqa: E402,F401
from overparam.studies import am_in_networks  # noqa: E402,F401
from overparam.studies import sparse_responses  # noqa: E402,F401
from overparam.studies import attractor_nets  # noqa: E402,F401
from overparam.studies import prune_redundancy  # noqa: E402,F401
# Compression and sparsity
from overparam.studies import tensorized  # noqa: E402,F401
from overparam.studies import tt_rank_selection  # noqa: E402,F401
from overparam.studies import weight_decay_sparsity  # noqa: E402,F401

__all__ = ["REGISTRY", "Check", "RunContext", "Study", "StudyResult", "register"]
