"""Instruments: pure functions of (model, loss, data) returning result dataclasses."""

from overparam.measure.data import count_examples, iter_batches
from overparam.measure.hessian import (CurvatureError, GaussNewtonOperator, HessianDensity, HessianEigs,
                                       HessianIndex, HessianOperator, HessianTrace, ResidualOperator,
                                       hessian_density, hessian_eigs, hessian_index, hessian_trace)
from overparam.measure.ntk import NTKResult, NTKSpectrum, ntk_eigs, ntk_gram, ntk_regression
from overparam.measure.sharpness import FlatLoss, PacBayesSigma, Sharpness, pacbayes_sigma, sharpness
from overparam.measure.interpolate import Interpolation, interpolate
from overparam.measure.landscape import Landscape, filter_normalized_direction, landscape
from overparam.measure.generalization import (GeneralizationMeasures, generalization_measures, output_margins,
                                              path_norm)
from overparam.measure.regions import RegionCount, classify_grid, count_regions, grid_points
from overparam.measure.calibration import (ReliabilityCurve, expected_calibration_error, nll, ood_auroc,
                                           predictive_entropy, reliability_curve)
from overparam.measure.baselines1d import (TrendFilterFit, difference_matrix, krr_smoother, krr_smoothers,
                                           monte_carlo_dof, smoother_df, smoothing_spline_smoother, trend_filter,
                                           trend_filter_lambda_max, wavelet_denoise)

__all__ = ["count_examples", "iter_batches", "CurvatureError", "GaussNewtonOperator", "HessianDensity", "HessianEigs",
           "HessianIndex", "HessianOperator", "HessianTrace", "ResidualOperator", "hessian_density", "hessian_eigs",
           "hessian_index", "hessian_trace", "NTKResult", "NTKSpectrum", "ntk_eigs", "ntk_gram", "ntk_regression",
           "FlatLoss", "PacBayesSigma", "Sharpness", "pacbayes_sigma", "sharpness", "Interpolation", "interpolate",
           "Landscape", "filter_normalized_direction", "landscape", "GeneralizationMeasures",
           "generalization_measures", "output_margins", "path_norm", "RegionCount", "classify_grid", "count_regions",
           "grid_points", "ReliabilityCurve", "expected_calibration_error", "nll", "ood_auroc", "predictive_entropy",
           "reliability_curve", "TrendFilterFit", "difference_matrix", "krr_smoother", "krr_smoothers",
           "monte_carlo_dof", "smoother_df", "smoothing_spline_smoother", "trend_filter", "trend_filter_lambda_max",
           "wavelet_denoise"]
