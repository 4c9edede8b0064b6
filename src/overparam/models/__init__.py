"""Models: MLPs, binary-weight, tensor-train (plain and Bayesian), parallel and residual nets, the Gaussian-sum toy."""

from overparam.models.mlp import MLP, count_parameters, mlp_parameter_count, seeded
from overparam.models.binary import BinaryLinear, BinaryMLP, QuasiNetwork, binary_mlp, clip_binary_
from overparam.models.gaussians import (GaussianSum, centre_gradient, gaussian, grid_loss,
                                        line_centre_gradient)
from overparam.models.tt import TTLinear, factorize, tt_flops, tt_matmul, tt_svd_matrix, tt_to_matrix
from overparam.models.bayes_tt import BayesianTTLinear, mc_predict, set_sampling
from overparam.models.parallel import (ParallelNet, ResNet1D, active_blocks, active_mask,
                                       active_subnetworks, decay_groups, output_variation, weight_penalty)

__all__ = ["MLP", "count_parameters", "mlp_parameter_count", "seeded", "BinaryLinear", "BinaryMLP", "QuasiNetwork",
           "binary_mlp", "clip_binary_", "GaussianSum", "centre_gradient", "gaussian", "grid_loss",
           "line_centre_gradient", "TTLinear", "factorize", "tt_flops", "tt_matmul", "tt_svd_matrix", "tt_to_matrix",
           "BayesianTTLinear", "mc_predict", "set_sampling", "ParallelNet", "ResNet1D", "active_blocks", "active_mask",
           "active_subnetworks", "decay_groups", "output_variation", "weight_penalty"]
