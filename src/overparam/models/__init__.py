"""Models: MLPs with exact parameter counts (more architectures arrive with their studies)."""

from overparam.models.mlp import MLP, count_parameters, mlp_parameter_count, seeded

__all__ = ["MLP", "count_parameters", "mlp_parameter_count", "seeded"]
