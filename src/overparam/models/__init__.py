"""Models: MLPs with exact parameter counts (more architectures arrive with their studies)."""

from overparam.models.mlp import MLP, count_parameters, mlp_parameter_count, seeded

from overparam.models.binary import BinaryLinear, BinaryMLP, QuasiNetwork, binary_mlp, clip_binary_  # noqa: E402

from overparam.models.gaussians import (GaussianSum, centre_gradient, gaussian, grid_loss,  # noqa: E402
                                        line_centre_gradient)
from overparam.models.tt import TTLinear, factorize, tt_flops, tt_matmul, tt_svd_matrix, tt_to_matrix  # noqa: E402
from overparam.models.bayes_tt import BayesianTTLinear, mc_predict, set_sampling  # noqa: E402
from overparam.models.parallel import (ParallelNet, ResNet1D, active_blocks, active_mask,  # noqa: E402
                                       active_subnetworks, decay_groups, output_variation, weight_penalty)

__all__ = ["ParallelNet", "ResNet1D", "active_blocks", "active_mask", "active_subnetworks", "decay_groups",
           "output_variation", "weight_penalty","BayesianTTLinear", "mc_predict", "set_sampling","TTLinear", "factorize", "tt_flops", "tt_matmul", "tt_svd_matrix", "tt_to_matrix","MLP", "count_parameters", "mlp_parameter_count", "seeded",
           "BinaryLinear", "BinaryMLP", "QuasiNetwork", "binary_mlp", "clip_binary_",
           "GaussianSum", "centre_gradient", "gaussian", "grid_loss", "line_centre_gradient"]
